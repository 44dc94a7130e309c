//! What the fuzz targets check beyond "no panic": the bounds DESIGN section 9 promises
//! for every value the node accepts, and that a refusal never echoes what was sent.
//! The targets call the node's own parsers and conversions; nothing here re-implements
//! them.

use adep_node::domain::identity::{
    DateOfBirth, FileError, Format, Identity, MAX_REPORTED_ERRORS, MAX_YEAR, MIN_YEAR, Name,
    OnBadRow, Record, RecordFile, check_column_name, limits, read_records,
};

mod strings;

/// Longest refusal message accepted: a message names a field and a rule, never a value.
pub const MAX_MESSAGE_BYTES: usize = 300;

/// Put into a value sent, it must never come back in a refusal. Not ASCII, so that no
/// rule or field name of a message can hold it by chance.
pub const MARKER: &str = "\u{2603}adep-fuzz-marker\u{2603}";

/// Panics unless a refusal message is short printable ASCII: a message is made of
/// field names, rules and numbers, so a value in it shows as a character outside.
pub fn check_refusal(message: &str) {
    assert!(
        message.len() < MAX_MESSAGE_BYTES,
        "refusal of {} bytes: {message:?}",
        message.len()
    );
    assert!(
        message.bytes().all(|b| (b' '..=b'~').contains(&b)),
        "refusal with a character a rule does not hold: {message:?}"
    );
}

/// Panics if a refusal of a value holding [`MARKER`] holds it too.
pub fn check_marked_refusal(message: &str) {
    assert!(
        !message.contains(MARKER),
        "refusal echoes a value that was sent: {message:?}"
    );
    check_refusal(message);
}

/// The string fields of a message, at any depth, in the order a conversion reads them
/// (map keys left out: they cannot be changed in place).
pub trait Strings {
    /// Appends the message's string fields to `out`.
    fn strings<'a>(&'a mut self, out: &mut Vec<&'a mut String>);
}

/// A copy of `message` with [`MARKER`] put into one of its string fields: `selector`
/// chooses which (halved, modulo their number) and whether before or after the value
/// (its lowest bit). None when the message has no string field.
pub fn marked<M: Strings + Clone>(message: &M, selector: u8) -> Option<M> {
    let mut copy = message.clone();
    let mut fields = Vec::new();
    copy.strings(&mut fields);
    let count = fields.len();
    if count == 0 {
        return None;
    }
    let field = fields.swap_remove(usize::from(selector >> 1) % count);
    if selector & 1 == 0 {
        field.insert_str(0, MARKER);
    } else {
        field.push_str(MARKER);
    }
    Some(copy)
}

/// Decodes `body` as `M` and, when it decodes, converts it with `convert`, which checks
/// what it accepts; a refusal must pass [`check_refusal`]. Then converts a copy with
/// [`MARKER`] in the string field `mark` chooses ([`marked`]); a refusal of it must
/// pass [`check_marked_refusal`].
pub fn convert_message<M, E>(body: &[u8], mark: u8, convert: impl Fn(&M) -> Result<(), E>)
where
    M: prost::Message + Default + Clone + Strings,
    E: ToString,
{
    let Ok(message) = M::decode(body) else { return };
    if let Err(e) = convert(&message) {
        check_refusal(&e.to_string());
    }
    if let Some(copy) = marked(&message, mark)
        && let Err(e) = convert(&copy)
    {
        check_marked_refusal(&e.to_string());
    }
}

/// Panics unless an identity keeps every bound of DESIGN section 4.
pub fn check_identity(identity: &Identity) {
    check_name(&identity.name);
    assert!(
        identity.aliases.len() <= limits::ALIASES,
        "too many aliases"
    );
    identity.aliases.iter().for_each(check_name);
    let year = identity.date_of_birth.year();
    assert!((MIN_YEAR..=MAX_YEAR).contains(&year), "year {year}");
    match identity.date_of_birth {
        DateOfBirth::Full { month, day, .. } => {
            assert!((1..=12).contains(&month) && (1..=31).contains(&day));
        }
        DateOfBirth::YearMonth { month, .. } => assert!((1..=12).contains(&month)),
        DateOfBirth::Year { .. } => {}
    }
    // What was accepted is accepted again, unchanged: the values are stored trimmed.
    let aliases: Vec<(String, String)> = identity
        .aliases
        .iter()
        .map(|a| (a.family.clone(), a.given.clone()))
        .collect();
    let again = Identity::from_fields(
        &identity.name.family,
        &identity.name.given,
        &identity.date_of_birth.to_string(),
        &aliases,
    );
    assert_eq!(again.as_ref(), Ok(identity), "identity does not round-trip");
}

fn check_name(name: &Name) {
    for (field, value, required) in [
        ("family", &name.family, true),
        ("given", &name.given, false),
    ] {
        assert!(
            value.chars().count() <= limits::NAME_CHARS,
            "{field} name too long"
        );
        assert!(
            !value.chars().any(char::is_control),
            "{field} name with a control character"
        );
        assert_eq!(value.trim(), value, "{field} name not trimmed");
        if required {
            assert!(
                value.chars().any(char::is_alphanumeric),
                "{field} name without a letter or digit"
            );
        }
    }
}

/// Panics unless a record keeps every bound of DESIGN section 4.
pub fn check_record(record: &Record) {
    let id = record.id.as_str();
    assert!((1..=limits::RECORD_ID_CHARS).contains(&id.chars().count()));
    assert!(
        id.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".:_-".contains(&b)),
        "record id with a character outside A-Za-z0-9._:-"
    );
    check_identity(&record.identity);
    if let Some(place) = &record.place_of_birth {
        assert!(!place.trim().is_empty() && place.chars().count() <= limits::PLACE_CHARS);
    }
    assert!(record.nationalities.len() <= limits::NATIONALITIES);
    for code in &record.nationalities {
        assert!((2..=3).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_uppercase()));
    }
    assert!(record.payload.len() <= limits::COLUMNS, "payload too wide");
    for (name, value) in &record.payload {
        assert!(check_column_name(name).is_ok(), "payload field name");
        assert!(
            !adep_node::domain::identity::IDENTITY_COLUMNS.contains(&name.as_str()),
            "an identity column in the payload"
        );
        assert!(!value.is_empty() && value.len() <= limits::PAYLOAD_VALUE_BYTES);
    }
}

/// Panics unless a file read keeps its bounds: records checked, ids unique, the bad
/// rows counted and listed within [`MAX_REPORTED_ERRORS`].
pub fn check_record_file(file: &RecordFile) {
    let mut ids = std::collections::HashSet::new();
    for record in &file.records {
        check_record(record);
        assert!(ids.insert(record.id.clone()), "duplicate record id");
    }
    assert!(file.skipped.len() <= MAX_REPORTED_ERRORS);
    assert!(file.skipped.len() <= file.skipped_total);
    assert_eq!(
        file.skipped.len(),
        file.skipped_total.min(MAX_REPORTED_ERRORS)
    );
    let mut last = 1;
    for error in &file.skipped {
        assert!(error.line() >= last, "bad row at line {}", error.line());
        last = error.line();
    }
}

/// A record file with [`MARKER`] put before every value of every row: after each comma
/// past the header line of a CSV file, at the start of each string value of a JSON
/// line.
pub fn marked_file(bytes: &[u8], format: Format) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() * 2);
    match format {
        Format::Csv => {
            let body = bytes
                .iter()
                .position(|b| *b == b'\n')
                .map_or(bytes.len(), |i| i + 1);
            out.extend_from_slice(&bytes[..body]);
            for &b in &bytes[body..] {
                out.push(b);
                if b == b',' {
                    out.extend_from_slice(MARKER.as_bytes());
                }
            }
        }
        Format::JsonLines => {
            let mut rest = bytes;
            while let Some(i) = rest.windows(3).position(|w| w == b"\":\"") {
                out.extend_from_slice(&rest[..i + 3]);
                out.extend_from_slice(MARKER.as_bytes());
                rest = &rest[i + 3..];
            }
            out.extend_from_slice(rest);
        }
    }
    out
}

/// Reads arbitrary bytes as a record file of `format`, skipping bad rows and failing on
/// them, and panics unless both reads keep their bounds and agree.
pub fn fuzz_record_file(bytes: &[u8], format: Format) {
    let skipping = read_records(bytes, format, OnBadRow::Skip);
    let failing = read_records(bytes, format, OnBadRow::Fail);
    match (&skipping, &failing) {
        (Ok(skipped), Ok(all)) => {
            check_record_file(all);
            assert_eq!(all.skipped_total, 0, "a failing read skipped rows");
            assert_eq!(skipped.records, all.records);
            assert_eq!(skipped.skipped_total, 0);
        }
        (Ok(skipped), Err(FileError::BadRows { errors, total })) => {
            check_record_file(skipped);
            assert_eq!(*total, skipped.skipped_total);
            assert_eq!(errors, &skipped.skipped);
            for error in errors {
                check_refusal(&error.to_string());
            }
        }
        (Err(FileError::Header(a)), Err(FileError::Header(b))) => assert_eq!(a, b),
        (Err(FileError::Io(_)), Err(FileError::Io(_))) => {}
        _ => panic!("skipping and failing reads disagree: {skipping:?} / {failing:?}"),
    }
    if let Err(error) = &failing {
        check_refusal(&error.to_string());
    }
    match read_records(
        marked_file(bytes, format).as_slice(),
        format,
        OnBadRow::Skip,
    ) {
        Ok(file) => file
            .skipped
            .iter()
            .for_each(|e| check_marked_refusal(&e.to_string())),
        Err(error) => check_marked_refusal(&error.to_string()),
    }
}
