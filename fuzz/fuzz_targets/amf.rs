//! AMF0 and AMF3 (avmplus) decoding of command/data bodies: decode, decode_all,
//! decode_amf3_envelope and Command::parse on the same bytes. What decodes must re-encode
//! to AMF0 that decodes to the same encoding again, and decode's cursor only moves on
//! success.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rtmp_edge::protocol::amf::{self, Amf0Value};
use rtmp_edge::protocol::message::{strip_set_data_frame, Command, UserControl};

fn stable(values: &[Amf0Value]) {
    let mut once = Vec::new();
    amf::encode_all(values, &mut once);
    let again = amf::decode_all(&once).expect("our own encoding must decode");
    let mut twice = Vec::new();
    amf::encode_all(&again, &mut twice);
    assert!(once == twice, "re-encoding is not stable");
}

fuzz_target!(|data: &[u8]| {
    let mut cur = data;
    match Amf0Value::decode(&mut cur) {
        Ok(v) => {
            assert!(cur.len() < data.len());
            stable(std::slice::from_ref(&v));
        }
        Err(_) => assert_eq!(cur.len(), data.len()),
    }
    if let Ok(values) = amf::decode_all(data) {
        stable(&values);
    }
    if let Ok(values) = amf::decode_amf3_envelope(data) {
        stable(&values);
    }
    let _ = Command::parse(20, data);
    let _ = Command::parse(17, data);
    let _ = UserControl::parse(data);
    let _ = strip_set_data_frame(&bytes::Bytes::copy_from_slice(data));
});
