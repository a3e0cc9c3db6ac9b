//! The TOML config file parser (structure, ${VAR} expansion, [server] flags through the
//! command-line parser, push destinations, TLS certificates).
#![no_main]
use libfuzzer_sys::fuzz_target;
use rtmp_edge::config::FileConfig;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(c) = FileConfig::parse(text) {
            let _ = c.server_args();
        }
    }
});
