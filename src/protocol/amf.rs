//! AMF0 value model and codec for RTMP command (20) and data (18) messages,
//! plus decode-only support for AMF3 values that clients embed through the
//! AMF0 "avmplus" marker inside AMF3 command/data messages (17/15).
//!
//! Everything here parses untrusted network input: decoding never panics,
//! bounds nesting depth and never sizes an allocation from a wire count.

/// Containers nested deeper than this are rejected so hostile input cannot
/// exhaust the stack while decoding (or while dropping the result).
pub const MAX_DEPTH: usize = 64;

/// AMF3 references let a couple of input bytes repeat an earlier string; cap
/// the bytes they may re-materialise so a small message cannot balloon memory: at most
/// this many per input byte (found by fuzzing: 6 KB made 4 MB under a fixed cap alone),
/// at least `MIN_AMF3_REF_BYTES`, never more than `MAX_AMF3_REF_BYTES`.
const MAX_AMF3_REF_BYTES: usize = 4 << 20;
const AMF3_REF_BYTES_PER_INPUT_BYTE: usize = 16;
const MIN_AMF3_REF_BYTES: usize = 64 << 10;

const OBJECT_END: u8 = 0x09;

#[derive(Debug, Clone, PartialEq)]
pub enum Amf0Value {
    Number(f64),
    Boolean(bool),
    /// Decoded from string (0x02), long string (0x0C) and XML document (0x0F).
    String(String),
    /// Properties in wire order.
    Object(Vec<(String, Amf0Value)>),
    Null,
    Undefined,
    EcmaArray(Vec<(String, Amf0Value)>),
    StrictArray(Vec<Amf0Value>),
    Date {
        millis: f64,
        timezone: i16,
    },
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum AmfError {
    #[error("AMF data truncated")]
    Truncated,
    #[error("unknown AMF0 marker 0x{0:02x}")]
    UnknownMarker(u8),
    #[error("unknown AMF3 marker 0x{0:02x}")]
    UnknownAmf3Marker(u8),
    #[error("AMF nesting deeper than {MAX_DEPTH}")]
    TooDeep,
    #[error("AMF3 reference {0} out of range")]
    BadReference(u32),
    #[error("unsupported AMF feature: {0}")]
    Unsupported(&'static str),
    #[error("AMF3 references expand beyond the allowed size")]
    LimitExceeded,
}

type Result<T> = std::result::Result<T, AmfError>;
type Props = Vec<(String, Amf0Value)>;

impl Amf0Value {
    /// Decodes one value and advances `buf` past it; `buf` is left untouched on error.
    pub fn decode(buf: &mut &[u8]) -> Result<Amf0Value> {
        let mut d = Decoder::new(buf);
        let value = d.amf0()?;
        *buf = d.buf;
        Ok(value)
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Amf0Value::Number(n) => {
                out.push(0x00);
                out.extend_from_slice(&n.to_be_bytes());
            }
            Amf0Value::Boolean(b) => out.extend_from_slice(&[0x01, u8::from(*b)]),
            Amf0Value::String(s) => {
                if s.len() <= usize::from(u16::MAX) {
                    out.push(0x02);
                    put_u16_prefixed(s.as_bytes(), out);
                } else {
                    out.push(0x0C);
                    put_u32_prefixed(s.as_bytes(), out);
                }
            }
            Amf0Value::Object(props) => {
                out.push(0x03);
                encode_props(props, out);
            }
            Amf0Value::Null => out.push(0x05),
            Amf0Value::Undefined => out.push(0x06),
            Amf0Value::EcmaArray(props) => {
                out.push(0x08);
                out.extend_from_slice(&saturating_u32(props.len()).to_be_bytes());
                encode_props(props, out);
            }
            Amf0Value::StrictArray(values) => {
                out.push(0x0A);
                let count = saturating_u32(values.len());
                out.extend_from_slice(&count.to_be_bytes());
                for v in values.iter().take(count as usize) {
                    v.encode(out);
                }
            }
            Amf0Value::Date { millis, timezone } => {
                out.push(0x0B);
                out.extend_from_slice(&millis.to_be_bytes());
                out.extend_from_slice(&timezone.to_be_bytes());
            }
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Amf0Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_number(&self) -> Option<f64> {
        match self {
            Amf0Value::Number(n) => Some(*n),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Amf0Value::Boolean(b) => Some(*b),
            _ => None,
        }
    }

    /// Properties of an Object or EcmaArray in wire order (None otherwise).
    pub fn properties(&self) -> Option<&[(String, Amf0Value)]> {
        match self {
            Amf0Value::Object(props) | Amf0Value::EcmaArray(props) => Some(props),
            _ => None,
        }
    }

    /// Property lookup for Object and EcmaArray (None otherwise); first match wins.
    pub fn get(&self, key: &str) -> Option<&Amf0Value> {
        self.properties()?
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    pub fn object(props: impl IntoIterator<Item = (&'static str, Amf0Value)>) -> Amf0Value {
        Amf0Value::Object(props.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    }
}

impl From<&str> for Amf0Value {
    fn from(s: &str) -> Self {
        Amf0Value::String(s.to_owned())
    }
}

impl From<String> for Amf0Value {
    fn from(s: String) -> Self {
        Amf0Value::String(s)
    }
}

impl From<f64> for Amf0Value {
    fn from(n: f64) -> Self {
        Amf0Value::Number(n)
    }
}

impl From<bool> for Amf0Value {
    fn from(b: bool) -> Self {
        Amf0Value::Boolean(b)
    }
}

/// Decode every value in buf until it is empty (for command/data messages).
pub fn decode_all(buf: &[u8]) -> Result<Vec<Amf0Value>> {
    let mut d = Decoder::new(buf);
    let mut values = Vec::new();
    while !d.buf.is_empty() {
        values.push(d.amf0()?);
    }
    Ok(values)
}

/// Encode a list of values back to back.
pub fn encode_all(values: &[Amf0Value], out: &mut Vec<u8>) {
    for v in values {
        v.encode(out);
    }
}

/// Decode the body of an AMF3 command/data message (types 17/15): skip a
/// leading 0x00 format byte if present, then decode_all.
pub fn decode_amf3_envelope(buf: &[u8]) -> Result<Vec<Amf0Value>> {
    match buf {
        [0x00, rest @ ..] => decode_all(rest),
        _ => decode_all(buf),
    }
}

fn saturating_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

// Over-long input is clipped rather than panicking; the length prefix always
// matches the bytes written so the stream stays parseable.
fn put_u16_prefixed(bytes: &[u8], out: &mut Vec<u8>) {
    let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes.get(..usize::from(len)).unwrap_or(bytes));
}

fn put_u32_prefixed(bytes: &[u8], out: &mut Vec<u8>) {
    let len = saturating_u32(bytes.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes.get(..len as usize).unwrap_or(bytes));
}

fn encode_props(props: &[(String, Amf0Value)], out: &mut Vec<u8>) {
    for (key, value) in props {
        put_u16_prefixed(key.as_bytes(), out);
        value.encode(out);
    }
    out.extend_from_slice(&[0x00, 0x00, OBJECT_END]);
}

#[derive(Clone)]
struct Traits {
    sealed: Vec<String>,
    dynamic: bool,
}

/// One decode pass. The AMF3 tables live here (not per 0x11 marker) because
/// some encoders share them across all avmplus values of one message; an
/// encoder that resets per value never refers back, so sharing is harmless.
#[derive(Default)]
struct Decoder<'a> {
    buf: &'a [u8],
    depth: usize,
    strings: Vec<String>,
    traits: Vec<Traits>,
    ref_bytes: usize,
    /// What references may re-materialise in all, from the input's size.
    ref_limit: usize,
}

impl<'a> Decoder<'a> {
    fn new(buf: &'a [u8]) -> Self {
        let ref_limit = buf
            .len()
            .saturating_mul(AMF3_REF_BYTES_PER_INPUT_BYTE)
            .clamp(MIN_AMF3_REF_BYTES, MAX_AMF3_REF_BYTES);
        Decoder {
            buf,
            ref_limit,
            ..Decoder::default()
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.buf.len() {
            return Err(AmfError::Truncated);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        self.take(N)?.try_into().map_err(|_| AmfError::Truncated)
    }

    fn u8(&mut self) -> Result<u8> {
        let [b] = self.array()?;
        Ok(b)
    }

    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn f64(&mut self) -> Result<f64> {
        Ok(f64::from_be_bytes(self.array()?))
    }

    // Lossy because real encoders put Latin-1 into metadata strings.
    fn string(&mut self, len: usize) -> Result<String> {
        Ok(String::from_utf8_lossy(self.take(len)?).into_owned())
    }

    fn short_string(&mut self) -> Result<String> {
        let len = self.u16()?;
        self.string(len.into())
    }

    /// Every element takes at least one byte, so the remaining input bounds
    /// any honest count.
    fn capacity(&self, claimed: usize) -> usize {
        claimed.min(self.buf.len())
    }

    fn nested<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        if self.depth >= MAX_DEPTH {
            return Err(AmfError::TooDeep);
        }
        self.depth += 1;
        let result = f(self);
        self.depth -= 1;
        result
    }

    fn amf0(&mut self) -> Result<Amf0Value> {
        Ok(match self.u8()? {
            0x00 => Amf0Value::Number(self.f64()?),
            0x01 => Amf0Value::Boolean(self.u8()? != 0),
            0x02 => Amf0Value::String(self.short_string()?),
            0x03 => Amf0Value::Object(self.nested(Self::amf0_props)?),
            0x05 => Amf0Value::Null,
            0x06 => Amf0Value::Undefined,
            // References are never resolved: nothing we act on uses them.
            0x07 => {
                self.u16()?;
                Amf0Value::Undefined
            }
            // The count is only a hint (often 0 with properties following).
            0x08 => {
                self.u32()?;
                Amf0Value::EcmaArray(self.nested(Self::amf0_props)?)
            }
            0x0A => {
                let count = self.u32()? as usize;
                Amf0Value::StrictArray(self.nested(|d| {
                    let mut values = Vec::with_capacity(d.capacity(count));
                    for _ in 0..count {
                        values.push(d.amf0()?);
                    }
                    Ok(values)
                })?)
            }
            0x0B => Amf0Value::Date {
                millis: self.f64()?,
                timezone: i16::from_be_bytes(self.array()?),
            },
            0x0C | 0x0F => {
                let len = self.u32()? as usize;
                Amf0Value::String(self.string(len)?)
            }
            0x0D => Amf0Value::Undefined,
            // The class name has no slot in the model; the properties matter.
            0x10 => {
                self.short_string()?;
                Amf0Value::Object(self.nested(Self::amf0_props)?)
            }
            0x11 => self.amf3()?,
            other => return Err(AmfError::UnknownMarker(other)),
        })
    }

    fn amf0_props(&mut self) -> Result<Props> {
        let mut props = Vec::new();
        loop {
            // Some encoders drop the end marker when the object ends the message.
            if self.buf.is_empty() {
                return Ok(props);
            }
            let key = self.short_string()?;
            if key.is_empty() {
                match self.buf.first() {
                    None => return Ok(props),
                    Some(&OBJECT_END) => {
                        self.take(1)?;
                        return Ok(props);
                    }
                    // Like librtmp, an empty key not followed by 0x09 is a property.
                    Some(_) => {}
                }
            }
            let value = self.amf0()?;
            props.push((key, value));
        }
    }

    fn charge(&mut self, bytes: usize) -> Result<()> {
        self.ref_bytes = self.ref_bytes.saturating_add(bytes);
        if self.ref_bytes > self.ref_limit {
            return Err(AmfError::LimitExceeded);
        }
        Ok(())
    }

    fn u29(&mut self) -> Result<u32> {
        let mut value = 0u32;
        for _ in 0..3 {
            let b = self.u8()?;
            value = (value << 7) | u32::from(b & 0x7F);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Ok((value << 8) | u32::from(self.u8()?))
    }

    /// Header of an AMF3 complex value; by-reference forms are not supported
    /// because we keep no object table.
    fn amf3_inline_len(&mut self, what: &'static str) -> Result<usize> {
        let header = self.u29()?;
        if header & 1 == 0 {
            return Err(AmfError::Unsupported(what));
        }
        Ok((header >> 1) as usize)
    }

    fn amf3_string(&mut self) -> Result<String> {
        let header = self.u29()?;
        let index = header >> 1;
        if header & 1 == 0 {
            let s = self
                .strings
                .get(index as usize)
                .cloned()
                .ok_or(AmfError::BadReference(index))?;
            self.charge(s.len())?;
            return Ok(s);
        }
        let s = self.string(index as usize)?;
        // The spec never enters the empty string into the table.
        if !s.is_empty() {
            self.strings.push(s.clone());
        }
        Ok(s)
    }

    fn amf3(&mut self) -> Result<Amf0Value> {
        Ok(match self.u8()? {
            0x00 => Amf0Value::Undefined,
            0x01 => Amf0Value::Null,
            0x02 => Amf0Value::Boolean(false),
            0x03 => Amf0Value::Boolean(true),
            // Sign-extend the 29-bit integer.
            0x04 => Amf0Value::Number(f64::from(((self.u29()? << 3) as i32) >> 3)),
            0x05 => Amf0Value::Number(self.f64()?),
            0x06 => Amf0Value::String(self.amf3_string()?),
            0x07 | 0x0B => {
                let len = self.amf3_inline_len("AMF3 XML reference")?;
                Amf0Value::String(self.string(len)?)
            }
            0x08 => {
                self.amf3_inline_len("AMF3 date reference")?;
                Amf0Value::Date {
                    millis: self.f64()?,
                    timezone: 0,
                }
            }
            0x09 => self.nested(Self::amf3_array)?,
            0x0A => self.nested(Self::amf3_object)?,
            0x0C => return Err(AmfError::Unsupported("AMF3 byte array")),
            0x0D..=0x11 => return Err(AmfError::Unsupported("AMF3 vector or dictionary")),
            other => return Err(AmfError::UnknownAmf3Marker(other)),
        })
    }

    fn amf3_dynamic_props(&mut self, props: &mut Props) -> Result<()> {
        loop {
            let key = self.amf3_string()?;
            if key.is_empty() {
                return Ok(());
            }
            let value = self.amf3()?;
            props.push((key, value));
        }
    }

    fn amf3_array(&mut self) -> Result<Amf0Value> {
        let dense_len = self.amf3_inline_len("AMF3 array reference")?;
        let mut assoc = Vec::new();
        self.amf3_dynamic_props(&mut assoc)?;
        let mut dense = Vec::with_capacity(self.capacity(dense_len));
        for _ in 0..dense_len {
            dense.push(self.amf3()?);
        }
        if assoc.is_empty() {
            return Ok(Amf0Value::StrictArray(dense));
        }
        let mut props: Props = dense
            .into_iter()
            .enumerate()
            .map(|(i, v)| (i.to_string(), v))
            .collect();
        props.extend(assoc);
        Ok(Amf0Value::EcmaArray(props))
    }

    fn amf3_object(&mut self) -> Result<Amf0Value> {
        let header = self.u29()?;
        if header & 1 == 0 {
            return Err(AmfError::Unsupported("AMF3 object reference"));
        }
        let traits = if header & 2 == 0 {
            let index = header >> 2;
            let traits = self
                .traits
                .get(index as usize)
                .cloned()
                .ok_or(AmfError::BadReference(index))?;
            // Every reuse re-materialises the member names.
            self.charge(traits.sealed.iter().map(String::len).sum())?;
            traits
        } else if header & 4 != 0 {
            return Err(AmfError::Unsupported("AMF3 externalizable object"));
        } else {
            let sealed_count = (header >> 4) as usize;
            self.amf3_string()?; // class name, no slot in the model
            let mut sealed = Vec::with_capacity(self.capacity(sealed_count));
            for _ in 0..sealed_count {
                sealed.push(self.amf3_string()?);
            }
            let traits = Traits {
                sealed,
                dynamic: header & 8 != 0,
            };
            self.traits.push(traits.clone());
            traits
        };
        let mut props = Vec::with_capacity(self.capacity(traits.sealed.len()));
        for name in traits.sealed {
            let value = self.amf3()?;
            props.push((name, value));
        }
        if traits.dynamic {
            self.amf3_dynamic_props(&mut props)?;
        }
        Ok(Amf0Value::Object(props))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Amf0Value::*;

    fn enc(v: &Amf0Value) -> Vec<u8> {
        let mut out = Vec::new();
        v.encode(&mut out);
        out
    }

    fn ok(bytes: &[u8]) -> Vec<Amf0Value> {
        decode_all(bytes).unwrap()
    }

    fn err(bytes: &[u8]) -> AmfError {
        decode_all(bytes).unwrap_err()
    }

    fn s(x: &str) -> Amf0Value {
        x.into()
    }

    fn date(millis: f64, timezone: i16) -> Amf0Value {
        Date { millis, timezone }
    }

    fn obj(props: &[(&str, Amf0Value)]) -> Vec<(std::string::String, Amf0Value)> {
        props
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    const ONE: &[u8] = b"\x00\x3f\xf0\0\0\0\0\0\0";
    const CONNECT: &[u8] = b"\x02\x00\x07connect\x00\x3f\xf0\0\0\0\0\0\0\x03\
        \x00\x03app\x02\x00\x04live\x00\x04type\x02\x00\x0anonprivate\
        \x00\x08flashVer\x02\x00\x1fFMLE/3.0 (compatible; FMSc/1.0)\
        \x00\x05tcUrl\x02\x00\x1artmp://127.0.0.1:1935/live\x00\x00\x09";

    #[test]
    fn byte_exact_vectors() {
        let cases = [
            (Number(1.0), ONE.to_vec()),
            (Boolean(true), b"\x01\x01".to_vec()),
            (Boolean(false), b"\x01\x00".to_vec()),
            (s("app"), b"\x02\x00\x03app".to_vec()),
            (s(""), b"\x02\x00\x00".to_vec()),
            (Null, b"\x05".to_vec()),
            (Undefined, b"\x06".to_vec()),
            (date(1.0, -60), [b"\x0b", &ONE[1..], b"\xff\xc4"].concat()),
            (Object(vec![]), b"\x03\x00\x00\x09".to_vec()),
            (
                Object(obj(&[("a", Number(1.0))])),
                [b"\x03\x00\x01a", ONE, b"\0\0\x09"].concat(),
            ),
            (
                EcmaArray(obj(&[("a", Null)])),
                b"\x08\0\0\0\x01\x00\x01a\x05\0\0\x09".to_vec(),
            ),
            (
                StrictArray(vec![Number(1.0), Null]),
                [b"\x0a\0\0\0\x02", ONE, b"\x05"].concat(),
            ),
        ];
        for (value, bytes) in cases {
            assert_eq!(enc(&value), bytes, "encode {value:?}");
            // Objects may legitimately end early (see lenient_forms); nothing else may.
            if !matches!(value, Object(_) | EcmaArray(_)) {
                for cut in 1..bytes.len() {
                    assert_eq!(err(&bytes[..cut]), AmfError::Truncated, "{value:?}/{cut}");
                }
            }
            let mut buf = &bytes[..];
            assert_eq!(Amf0Value::decode(&mut buf), Ok(value));
            assert!(buf.is_empty());
        }
        assert_eq!(ok(b"\x01\x7f"), [Boolean(true)]);
    }

    #[test]
    fn connect_round_trips_byte_exactly() {
        let values = ok(CONNECT);
        let expected = [
            s("connect"),
            1.0.into(),
            Amf0Value::object([
                ("app", s("live")),
                ("type", s("nonprivate")),
                ("flashVer", s("FMLE/3.0 (compatible; FMSc/1.0)")),
                ("tcUrl", s("rtmp://127.0.0.1:1935/live")),
            ]),
        ];
        assert_eq!(values, expected);
        assert_eq!(values[2].get("app"), Some(&s("live")));
        let mut out = Vec::new();
        encode_all(&values, &mut out);
        assert_eq!(out, CONNECT);
    }

    #[test]
    fn ecma_count_is_only_a_hint() {
        let expected = [EcmaArray(obj(&[("a", Null), ("b", Boolean(true))])), Null];
        for hint in [b"\0\0\0\0", b"\0\0\0\x63", b"\xff\xff\xff\xff"] {
            let body = b"\x00\x01a\x05\x00\x01b\x01\x01\0\0\x09\x05";
            assert_eq!(ok(&[&b"\x08"[..], hint, body].concat()), expected);
        }
    }

    #[test]
    fn long_string_and_xml() {
        let long = "x".repeat(70_000);
        let bytes = enc(&s(&long));
        assert_eq!(bytes[..5], [0x0C, 0x00, 0x01, 0x11, 0x70]);
        assert_eq!(ok(&bytes), [String(long)]);
        assert_eq!(enc(&s(&"y".repeat(65_535)))[..3], [0x02, 0xFF, 0xFF]);
        assert_eq!(ok(b"\x0c\0\0\0\x01z\x0f\0\0\0\x02<a"), [s("z"), s("<a")]);
    }

    #[test]
    fn lenient_forms() {
        // reference and unsupported decode as Undefined
        assert_eq!(ok(b"\x07\x00\x01\x0d"), [Undefined, Undefined]);
        let k_null = [Object(obj(&[("k", Null)]))];
        assert_eq!(ok(b"\x10\x00\x03Foo\x00\x01k\x05\0\0\x09"), k_null);
        // object end missing at end of buffer, with and without the empty key
        assert_eq!(ok(b"\x03\x00\x01k\x05"), k_null);
        assert_eq!(ok(b"\x03\x00\x01k\x05\0\0"), k_null);
        assert_eq!(ok(b"\x02\x00\x02a\xe9"), [s("a\u{FFFD}")]);
    }

    #[test]
    fn truncated_and_invalid_inputs_error() {
        let truncated: &[&[u8]] = &[
            b"\x03\x00",
            b"\x03\x00\x03a",
            b"\x03\x00\x01a",
            b"\x11\x04\x80",
            b"\x11\x06\x07a",
            &CONNECT[..CONNECT.len() - 10],
            // counts near u32::MAX must fail on data, not on allocation
            b"\x0a\xff\xff\xff\xff\x05",
            b"\x11\x09\xff\xff\xff\xff\x01",
            b"\x11\x0a\xff\xff\xff\xf3\x01",
        ];
        for case in truncated {
            assert_eq!(err(case), AmfError::Truncated, "{case:02x?}");
        }
        let mut buf: &[u8] = b"\x02\x00\x05a";
        assert!(Amf0Value::decode(&mut buf).is_err());
        assert_eq!(buf.len(), 4, "slice untouched on error");
        for m in [0x04u8, 0x09, 0x0E, 0x12, 0xFF] {
            assert_eq!(err(&[m]), AmfError::UnknownMarker(m));
        }
        assert_eq!(err(b"\x11\x20"), AmfError::UnknownAmf3Marker(0x20));
    }

    #[test]
    fn depth_bombs_error() {
        let nest = |head: &[u8], level: &[u8], n| [head, &level.repeat(n)].concat();
        assert_eq!(
            err(&nest(b"", b"\x0a\0\0\0\x01", 10_000)),
            AmfError::TooDeep
        );
        assert_eq!(
            err(&nest(b"\x03", b"\x00\x01k\x03", 10_000)),
            AmfError::TooDeep
        );
        assert_eq!(
            err(&nest(b"\x11", b"\x09\x03\x01", 10_000)),
            AmfError::TooDeep
        );
        let at_limit = nest(b"", b"\x0a\0\0\0\x01", MAX_DEPTH - 1);
        assert!(decode_all(&[&at_limit[..], b"\x0a\0\0\0\0"].concat()).is_ok());
    }

    #[test]
    fn amf3_envelope_scalars_strings_and_arrays() {
        let body = [
            b"\x00\x02\x00\x07connect".as_slice(),
            b"\x11\x04\x05\x11\x04\x82\x2c\x11\x04\xff\xff\xff\xff", // 5, 300, -1
            b"\x11\x06\x07abc\x11\x06\x00",                          // "abc", ref 0
            b"\x11\x09\x0b\x01\x06\x05xy\x06\x02\x05\x40\x04\0\0\0\0\0\0\x01\x03", // ["xy", ref 1, 2.5, null, true]
            b"\x11\x00\x11\x02\x11\x08\x01\x3f\xf8\0\0\0\0\0\0", // undefined, false, date 1.5
        ]
        .concat();
        let expected = [
            s("connect"),
            Number(5.0),
            Number(300.0),
            Number(-1.0),
            s("abc"),
            s("abc"),
            StrictArray(vec![s("xy"), s("xy"), Number(2.5), Null, Boolean(true)]),
            Undefined,
            Boolean(false),
            date(1.5, 0),
        ];
        assert_eq!(decode_amf3_envelope(&body), Ok(expected.to_vec()));
        // without the format byte the body is plain AMF0
        assert_eq!(decode_amf3_envelope(&CONNECT[..10]), Ok(vec![s("connect")]));
        assert_eq!(decode_amf3_envelope(&[]), Ok(vec![]));
    }

    #[test]
    fn amf3_objects_and_mixed_arrays() {
        assert_eq!(
            ok(b"\x11\x0a\x0b\x01\x03k\x04\x01\x01"),
            [Object(obj(&[("k", Number(1.0))]))]
        );
        // [P{a:true,b:false}, P{a:null,b:7}], the second via trait reference
        let sealed = b"\x11\x09\x05\x01\x0a\x23\x03P\x03a\x03b\x03\x02\x0a\x01\x01\x04\x07";
        let p = |a, b| Object(obj(&[("a", a), ("b", b)]));
        let expected = StrictArray(vec![p(Boolean(true), Boolean(false)), p(Null, Number(7.0))]);
        assert_eq!(ok(sealed), [expected]);
        // ["d", k: "v"] keeps the dense part under index keys
        let mixed = EcmaArray(obj(&[("0", s("d")), ("k", s("v"))]));
        assert_eq!(ok(b"\x11\x09\x03\x03k\x06\x03v\x01\x06\x03d"), [mixed]);
    }

    #[test]
    fn amf3_unsupported_and_bad_references() {
        // object ref, array ref, externalizable, byte array
        let cases = [
            &b"\x11\x0a\x00"[..],
            b"\x11\x09\x02",
            b"\x11\x0a\x07\x01",
            b"\x11\x0c\x03\0",
        ];
        for case in cases {
            assert!(matches!(err(case), AmfError::Unsupported(_)), "{case:02x?}");
        }
        assert_eq!(err(b"\x11\x06\x04"), AmfError::BadReference(2));
        assert_eq!(err(b"\x11\x0a\x05"), AmfError::BadReference(1));
        // empty strings are never entered into the table
        assert_eq!(err(b"\x11\x06\x01\x11\x06\x00"), AmfError::BadReference(0));
        // a 60 KB string (U29 length header 120001), then 30k 3-byte references
        let refs = b"\x11\x06\x00".repeat(30_000);
        let bomb = [&b"\x11\x06\x87\xa9\x41"[..], &[b'a'; 60_000], &refs].concat();
        assert_eq!(err(&bomb), AmfError::LimitExceeded);
    }

    #[test]
    fn accessors_and_conversions() {
        let o = Amf0Value::object([("n", 2.0.into()), ("b", true.into()), ("s", "x".into())]);
        assert_eq!(o.get("n").and_then(Amf0Value::as_number), Some(2.0));
        assert_eq!(o.get("b").and_then(Amf0Value::as_bool), Some(true));
        assert_eq!(o.get("s").and_then(Amf0Value::as_str), Some("x"));
        assert_eq!(o.properties().map(<[_]>::len), Some(3));
        assert_eq!(EcmaArray(obj(&[("e", Null)])).get("e"), Some(&Null));
        assert_eq!(Amf0Value::from("o".to_string()).as_str(), Some("o"));
        assert!(o.get("missing").is_none() && Null.get("e").is_none());
        assert!(Number(1.0).as_str().is_none() && s("1").as_number().is_none());
    }

    #[test]
    fn fuzz_never_panics() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let list = StrictArray(vec![Undefined, s("z"), date(5.0, 0)]);
        let meta = EcmaArray(obj(&[("l", list)]));
        let seeds = [
            CONNECT.to_vec(),
            enc(&meta),
            b"\x00\x11\x09\x05\x03k\x06\x00\x01\x0a\x23\x03P\x03a\x03b\x03\x02\x04\x7f".to_vec(),
            b"\x11\x0a\x0b\x01\x03k\x04\x01\x01\x10\x00\x01C\0\0\x09\x11\x0a\x01\x05".to_vec(),
        ];
        for i in 0..6000 {
            let r = next();
            let mut buf: Vec<u8> = if i % 3 == 0 {
                // random bytes, biased towards valid markers and short lengths
                (0..r % 48).map(|_| (next() % 20) as u8).collect()
            } else {
                seeds[(r % seeds.len() as u64) as usize].clone()
            };
            for _ in 0..next() % 4 {
                if buf.is_empty() {
                    break;
                }
                let at = (next() % buf.len() as u64) as usize;
                match next() % 4 {
                    0 => buf[at] = next() as u8,
                    1 => buf.truncate(at),
                    2 => buf.insert(at, next() as u8),
                    _ => buf[at] ^= 1 << (next() % 8),
                }
            }
            // Compare bytes, not values: mutations can produce NaN.
            if let Ok(values) = decode_all(&buf) {
                let mut once = Vec::new();
                encode_all(&values, &mut once);
                let mut twice = Vec::new();
                encode_all(&ok(&once), &mut twice);
                assert_eq!(once, twice);
            }
            let _ = decode_amf3_envelope(&buf);
        }
    }
}

#[cfg(test)]
mod amplification {
    use super::*;

    /// Found by `cargo fuzz` (fuzz/artifacts-found): 6 KB whose AMF3 string references
    /// re-materialised 4 MB on every decode. Now bounded by the input's size.
    #[test]
    fn amf3_references_stay_proportional_to_the_input() {
        let input = include_bytes!("../../fuzz/artifacts-found/amf3-ref-amplification");
        assert_eq!(decode_all(input), Err(AmfError::LimitExceeded));
    }
}
