//! FLV tag body inspection (what the server reads from every audio/video message) and
//! the onMetaData picture parse.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rtmp_edge::media::metadata::Picture;
use rtmp_edge::media::tag::{audio_codec_name, inspect_audio, inspect_video, video_codec_name};

fuzz_target!(|data: &[u8]| {
    let v = inspect_video(data);
    let _ = video_codec_name(v.codec);
    let a = inspect_audio(data);
    let _ = audio_codec_name(a.codec);
    let _ = Picture::from_metadata(data);
});
