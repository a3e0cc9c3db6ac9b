//! What an encoder announces in onMetaData about its picture (the API shows it).

use crate::protocol::amf;

/// Width, height and frame rate from onMetaData; None where it says nothing usable.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Picture {
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub framerate: Option<f64>,
}

impl Picture {
    /// Parses an onMetaData body; anything unparsable gives nothing.
    pub fn from_metadata(payload: &[u8]) -> Self {
        let Ok(values) = amf::decode_all(payload) else {
            return Self::default();
        };
        let Some(meta) = values.iter().find(|v| v.properties().is_some()) else {
            return Self::default();
        };
        let num = |k: &str| meta.get(k).and_then(|v| v.as_number());
        let dim = |k: &str| {
            num(k)
                .filter(|n| (1.0..=65535.0).contains(n))
                .map(|n| n as u32)
        };
        let framerate = num("framerate")
            .or_else(|| num("fps"))
            .filter(|f| f.is_finite() && *f > 0.0 && *f < 1000.0);
        Self {
            width: dim("width"),
            height: dim("height"),
            framerate,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::amf::Amf0Value;

    #[test]
    fn reads_dimensions_and_rate_and_ignores_nonsense() {
        let mut body = Vec::new();
        amf::encode_all(
            &[
                Amf0Value::String("onMetaData".into()),
                Amf0Value::EcmaArray(vec![
                    ("width".into(), Amf0Value::Number(1280.0)),
                    ("height".into(), Amf0Value::Number(0.0)),
                    ("fps".into(), Amf0Value::Number(29.97)),
                ]),
            ],
            &mut body,
        );
        let p = Picture::from_metadata(&body);
        assert_eq!(p.width, Some(1280));
        assert_eq!(p.height, None, "0 is not a height");
        assert_eq!(p.framerate, Some(29.97));
        assert_eq!(Picture::from_metadata(b"\xff garbage"), Picture::default());
    }
}
