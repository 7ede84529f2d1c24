//! The few fields of an X.509 certificate (RFC 5280) that cutover reads: when it is valid and
//! which DNS names it covers. A whole X.509 parser would be a large dependency for three fields;
//! rustls has already checked the certificates it serves, this only schedules and indexes them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SEQUENCE: u8 = 0x30;
const VERSION: u8 = 0xA0; // [0] EXPLICIT
const EXTENSIONS: u8 = 0xA3; // [3] EXPLICIT
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
const OID: u8 = 0x06;
const BOOLEAN: u8 = 0x01;
const OCTET_STRING: u8 = 0x04;
const DNS_NAME: u8 = 0x82; // GeneralName [2] IMPLICIT IA5String
/// id-ce-subjectAltName, 2.5.29.17.
const SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1D, 0x11];

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct CertFields {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// The subjectAltName's DNS names, as written (`*.example.com` included).
    pub dns_names: Vec<String>,
}

/// One extension: its OID (content bytes), whether it is critical, its value.
pub(super) struct Extension<'a> {
    pub oid: &'a [u8],
    // Read by the tests of the challenge certificate (which must mark it critical).
    #[cfg_attr(not(test), allow(dead_code))]
    pub critical: bool,
    pub value: &'a [u8],
}

pub(super) fn cert_fields(der: &[u8]) -> Result<CertFields, &'static str> {
    let tbs = Tbs::read(der)?;
    let mut validity = tbs.validity;
    let not_before = time(next(&mut validity)?)?;
    let not_after = time(next(&mut validity)?)?;
    let mut dns_names = Vec::new();
    for ext in extensions_of(tbs.extensions)? {
        if ext.oid != SUBJECT_ALT_NAME {
            continue;
        }
        let mut value = ext.value;
        let mut names = expect(&mut value, SEQUENCE)?;
        while !names.is_empty() {
            let name = next(&mut names)?;
            if name.tag == DNS_NAME {
                let text = std::str::from_utf8(name.value).map_err(|_| "a DNS name is not text")?;
                dns_names.push(text.to_owned());
            }
        }
    }
    Ok(CertFields {
        not_before,
        not_after,
        dns_names,
    })
}

/// Every extension of the certificate, in order.
#[cfg(test)]
pub(super) fn extensions(der: &[u8]) -> Result<Vec<Extension<'_>>, &'static str> {
    extensions_of(Tbs::read(der)?.extensions)
}

/// The parts of tbsCertificate this module reads, as their content bytes.
struct Tbs<'a> {
    validity: &'a [u8],
    /// The content of `[3] Extensions`; empty when absent.
    extensions: &'a [u8],
}

impl<'a> Tbs<'a> {
    fn read(der: &'a [u8]) -> Result<Tbs<'a>, &'static str> {
        let mut input = der;
        let mut cert = expect(&mut input, SEQUENCE)?;
        let mut tbs = expect(&mut cert, SEQUENCE)?;
        // The version is optional; then the serial number, signature, issuer, validity.
        if next(&mut tbs)?.tag == VERSION {
            next(&mut tbs)?;
        }
        let _signature = expect(&mut tbs, SEQUENCE)?;
        let _issuer = expect(&mut tbs, SEQUENCE)?;
        let validity = expect(&mut tbs, SEQUENCE)?;
        let mut extensions: &[u8] = &[];
        while !tbs.is_empty() {
            let field = next(&mut tbs)?;
            if field.tag == EXTENSIONS {
                let mut outer = field.value;
                extensions = expect(&mut outer, SEQUENCE)?;
            }
        }
        Ok(Tbs {
            validity,
            extensions,
        })
    }
}

fn extensions_of(mut list: &[u8]) -> Result<Vec<Extension<'_>>, &'static str> {
    let mut out = Vec::new();
    while !list.is_empty() {
        let mut ext = expect(&mut list, SEQUENCE)?;
        let oid = expect(&mut ext, OID)?;
        let mut field = next(&mut ext)?;
        let mut critical = false;
        if field.tag == BOOLEAN {
            critical = field.value.first().is_some_and(|b| *b != 0);
            field = next(&mut ext)?;
        }
        if field.tag != OCTET_STRING {
            return Err("an extension's value is not an OCTET STRING");
        }
        out.push(Extension {
            oid,
            critical,
            value: field.value,
        });
    }
    Ok(out)
}

struct Tlv<'a> {
    tag: u8,
    value: &'a [u8],
}

/// The next element of `input`, which moves past it.
fn next<'a>(input: &mut &'a [u8]) -> Result<Tlv<'a>, &'static str> {
    const TRUNCATED: &str = "the certificate is truncated";
    let (&tag, rest) = input.split_first().ok_or(TRUNCATED)?;
    if tag & 0x1F == 0x1F {
        return Err("a multi-byte DER tag (not used by certificates)");
    }
    let (&first, mut rest) = rest.split_first().ok_or(TRUNCATED)?;
    let len = if first < 0x80 {
        first as usize
    } else {
        let count = (first & 0x7F) as usize;
        if count == 0 || count > 4 || rest.len() < count {
            return Err("a DER length is malformed");
        }
        let len = rest[..count]
            .iter()
            .fold(0usize, |len, b| (len << 8) | *b as usize);
        rest = &rest[count..];
        len
    };
    if rest.len() < len {
        return Err(TRUNCATED);
    }
    let (value, rest) = rest.split_at(len);
    *input = rest;
    Ok(Tlv { tag, value })
}

fn expect<'a>(input: &mut &'a [u8], tag: u8) -> Result<&'a [u8], &'static str> {
    let tlv = next(input)?;
    if tlv.tag != tag {
        return Err("the certificate's structure is not X.509");
    }
    Ok(tlv.value)
}

/// UTCTime `YYMMDDHHMMSSZ` (years 1950-2049) or GeneralizedTime `YYYYMMDDHHMMSSZ`, as DER
/// requires them.
fn time(tlv: Tlv<'_>) -> Result<SystemTime, &'static str> {
    const BAD: &str = "a validity time is malformed";
    let text = std::str::from_utf8(tlv.value).map_err(|_| BAD)?;
    let digits = text.strip_suffix('Z').ok_or(BAD)?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(BAD);
    }
    let (year, rest) = match (tlv.tag, digits.len()) {
        (UTC_TIME, 12) => {
            let yy: i64 = digits[..2].parse().map_err(|_| BAD)?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, &digits[2..])
        }
        (GENERALIZED_TIME, 14) => (digits[..4].parse().map_err(|_| BAD)?, &digits[4..]),
        _ => return Err(BAD),
    };
    let field = |i: usize| rest[i..i + 2].parse::<i64>().map_err(|_| BAD);
    let (month, day) = (field(0)?, field(2)?);
    let (hour, minute, second) = (field(4)?, field(6)?, field(8)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return Err(BAD);
    }
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
    let seconds = u64::try_from(seconds).map_err(|_| "a validity time is before 1970")?;
    Ok(UNIX_EPOCH + Duration::from_secs(seconds))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12; // March is 0
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(names: &[&str], from: (i32, u8, u8), to: (i32, u8, u8)) -> Vec<u8> {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        params.not_before = rcgen::date_time_ymd(from.0, from.1, from.2);
        params.not_after = rcgen::date_time_ymd(to.0, to.1, to.2);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    fn ymd(year: i64, month: i64, day: i64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(days_from_civil(year, month, day) as u64 * 86_400)
    }

    #[test]
    fn reads_validity_and_dns_names() {
        let der = self_signed(
            &["api.example.com", "*.example.com"],
            (2024, 2, 29),
            (2030, 12, 31),
        );
        let fields = cert_fields(&der).unwrap();
        assert_eq!(fields.not_before, ymd(2024, 2, 29));
        assert_eq!(fields.not_after, ymd(2030, 12, 31));
        assert_eq!(fields.dns_names, ["api.example.com", "*.example.com"]);
    }

    #[test]
    fn reads_generalized_time_after_2049() {
        let der = self_signed(&["a.example"], (2049, 6, 1), (2051, 3, 1));
        let fields = cert_fields(&der).unwrap();
        assert_eq!(fields.not_before, ymd(2049, 6, 1));
        assert_eq!(fields.not_after, ymd(2051, 3, 1));
    }

    #[test]
    fn civil_days_match_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2024, 12, 31), 20_088);
    }

    #[test]
    fn rejects_garbage_and_truncation() {
        assert!(cert_fields(b"not a certificate").is_err());
        let der = self_signed(&["a.example"], (2024, 1, 1), (2025, 1, 1));
        assert!(cert_fields(&der[..der.len() / 2]).is_err());
        assert!(cert_fields(&[]).is_err());
    }
}
