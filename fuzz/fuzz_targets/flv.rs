//! FLV file reading (the load generator's input; recordings use the same layout), each tag
//! then inspected like a received message.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rtmp_edge::media::flv::{read_tags, TAG_AUDIO, TAG_VIDEO};
use rtmp_edge::media::tag::{inspect_audio, inspect_video};

fuzz_target!(|data: &[u8]| {
    let file = bytes::Bytes::copy_from_slice(data);
    if let Ok(tags) = read_tags(&file) {
        let mut total = 0;
        for t in &tags {
            total += 11 + t.data.len() + 4;
            match t.tag_type {
                TAG_VIDEO => drop(inspect_video(&t.data)),
                TAG_AUDIO => drop(inspect_audio(&t.data)),
                _ => {}
            }
        }
        assert!(total <= data.len() + 4);
    }
});
