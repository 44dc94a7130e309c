//! Records and identities in the interchange format (DESIGN section 4).
//!
//! A record file is CSV with a header row or JSON Lines with the same field names. Every
//! field is bounded; a bad row is reported with its line number and the field, never
//! with the value (the value is personal data). Columns beyond the identity columns are
//! the record's payload: kept, never indexed, released only through an approved
//! follow-up.

use std::{collections::BTreeMap, fmt};

use serde::{Deserialize, Serialize};

mod file;
pub use file::{
    FieldError, FileError, Format, MAX_REPORTED_ERRORS, OnBadRow, RecordFile, RowError,
    read_records,
};

/// Bounds on one record. Files larger than these are refused row by row.
pub mod limits {
    /// Longest record id, in characters.
    pub const RECORD_ID_CHARS: usize = 64;
    /// Longest family name or given names field, in characters.
    pub const NAME_CHARS: usize = 200;
    /// Longest place of birth, in characters.
    pub const PLACE_CHARS: usize = 200;
    /// Most nationalities on one record.
    pub const NATIONALITIES: usize = 8;
    /// Most aliases on one record.
    pub const ALIASES: usize = 16;
    /// Longest payload value, in bytes.
    pub const PAYLOAD_VALUE_BYTES: usize = 4096;
    /// Most columns in a file (identity and payload together).
    pub const COLUMNS: usize = 64;
    /// Longest column name, in bytes.
    pub const COLUMN_NAME_BYTES: usize = 64;
    /// Longest line of a JSON Lines file, in bytes.
    pub const LINE_BYTES: usize = 128 * 1024;
}

/// The identity columns every file has (some optional), in interchange order.
pub const IDENTITY_COLUMNS: [&str; 8] = [
    "record_id",
    "family_name",
    "given_names",
    "date_of_birth",
    "sex",
    "place_of_birth",
    "nationality",
    "aliases",
];

/// A record's id: 1-64 characters of `A-Za-z0-9._:-`, unique within its node.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RecordId(std::sync::Arc<str>);

impl RecordId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for RecordId {
    type Error = Problem;

    fn try_from(value: String) -> Result<Self, Problem> {
        if value.is_empty() {
            return Err(Problem::Missing);
        }
        if value.chars().count() > limits::RECORD_ID_CHARS {
            return Err(Problem::TooLong(limits::RECORD_ID_CHARS));
        }
        if !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
        {
            return Err(Problem::Invalid("only A-Za-z0-9._:- are allowed"));
        }
        Ok(RecordId(value.into()))
    }
}

impl TryFrom<&str> for RecordId {
    type Error = Problem;

    fn try_from(value: &str) -> Result<Self, Problem> {
        RecordId::try_from(value.to_owned())
    }
}

impl From<RecordId> for String {
    fn from(id: RecordId) -> String {
        id.0.to_string()
    }
}

impl fmt::Display for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A date of birth, complete or partial.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DateOfBirth {
    /// Year, month and day known.
    Full {
        /// Year.
        year: u16,
        /// Month, 1-12.
        month: u8,
        /// Day, 1-31 and valid for the month.
        day: u8,
    },
    /// Year and month known.
    YearMonth {
        /// Year.
        year: u16,
        /// Month, 1-12.
        month: u8,
    },
    /// Only the year known.
    Year {
        /// Year.
        year: u16,
    },
}

/// Earliest year of birth accepted.
pub const MIN_YEAR: u16 = 1850;
/// Latest year of birth accepted.
pub const MAX_YEAR: u16 = 2100;

impl DateOfBirth {
    /// Parses `YYYY-MM-DD`, `YYYY-MM` or `YYYY`.
    pub fn parse(text: &str) -> Result<DateOfBirth, Problem> {
        let text = text.trim();
        if text.is_empty() {
            return Err(Problem::Missing);
        }
        const EXPECTED: &str = "expected YYYY-MM-DD, YYYY-MM or YYYY";
        let parts: Vec<&str> = text.split('-').collect();
        let number = |s: &str, digits: usize| -> Result<u16, Problem> {
            if s.len() != digits || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(Problem::Invalid(EXPECTED));
            }
            s.parse().map_err(|_| Problem::Invalid(EXPECTED))
        };
        let year = number(parts[0], 4)?;
        if !(MIN_YEAR..=MAX_YEAR).contains(&year) {
            return Err(Problem::Invalid("year outside 1850-2100"));
        }
        let month = |s: &str| -> Result<u8, Problem> {
            let m = number(s, 2)?;
            if !(1..=12).contains(&m) {
                return Err(Problem::Invalid("month outside 01-12"));
            }
            Ok(m as u8)
        };
        match parts.as_slice() {
            [_] => Ok(DateOfBirth::Year { year }),
            [_, m] => Ok(DateOfBirth::YearMonth {
                year,
                month: month(m)?,
            }),
            [_, m, d] => {
                let month = month(m)?;
                let day = number(d, 2)? as u8;
                if day == 0 || day > days_in_month(year, month) {
                    return Err(Problem::Invalid("no such day in that month"));
                }
                Ok(DateOfBirth::Full { year, month, day })
            }
            _ => Err(Problem::Invalid(EXPECTED)),
        }
    }

    /// Whether every day this date may stand for is after `today` (year, month,
    /// day): a birth that has not happened yet.
    pub fn is_after(&self, today: (u16, u8, u8)) -> bool {
        match *self {
            DateOfBirth::Full { year, month, day } => (year, month, day) > today,
            DateOfBirth::YearMonth { year, month } => (year, month) > (today.0, today.1),
            DateOfBirth::Year { year } => year > today.0,
        }
    }

    /// The year, always known.
    pub fn year(&self) -> u16 {
        match *self {
            DateOfBirth::Full { year, .. }
            | DateOfBirth::YearMonth { year, .. }
            | DateOfBirth::Year { year } => year,
        }
    }
}

impl fmt::Display for DateOfBirth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            DateOfBirth::Full { year, month, day } => write!(f, "{year:04}-{month:02}-{day:02}"),
            DateOfBirth::YearMonth { year, month } => write!(f, "{year:04}-{month:02}"),
            DateOfBirth::Year { year } => write!(f, "{year:04}"),
        }
    }
}

fn days_in_month(year: u16, month: u8) -> u8 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400) => {
            29
        }
        _ => 28,
    }
}

/// Sex as recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Sex {
    /// Male.
    M,
    /// Female.
    F,
    /// Other.
    X,
    /// Unknown.
    U,
}

impl Sex {
    /// Parses `M`, `F`, `X` or `U` (either case).
    pub fn parse(text: &str) -> Result<Sex, Problem> {
        match text.trim() {
            "M" | "m" => Ok(Sex::M),
            "F" | "f" => Ok(Sex::F),
            "X" | "x" => Ok(Sex::X),
            "U" | "u" => Ok(Sex::U),
            _ => Err(Problem::Invalid("expected M, F, X or U")),
        }
    }

    /// The one-letter code.
    pub fn code(&self) -> &'static str {
        match self {
            Sex::M => "M",
            Sex::F => "F",
            Sex::X => "X",
            Sex::U => "U",
        }
    }
}

/// A name: family name(s) and given name(s), as written.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Name {
    /// Family name(s), any script; may hold several (`García López`).
    pub family: String,
    /// Given name(s), separated by spaces or hyphens; may be empty.
    pub given: String,
}

/// The part of a record that is matched on.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Identity {
    /// The person's name.
    pub name: Name,
    /// Date of birth.
    pub date_of_birth: DateOfBirth,
    /// Other names the person is known by.
    pub aliases: Vec<Name>,
}

impl Identity {
    /// Builds an identity from its text fields, with the same checks as a file row.
    pub fn from_fields(
        family: &str,
        given: &str,
        date_of_birth: &str,
        aliases: &[(String, String)],
    ) -> Result<Identity, FieldError> {
        let field = |field: &'static str| move |problem| FieldError { field, problem };
        let family = name_field(family, true).map_err(field("family_name"))?;
        let given = name_field(given, false).map_err(field("given_names"))?;
        let date_of_birth = DateOfBirth::parse(date_of_birth).map_err(field("date_of_birth"))?;
        if aliases.len() > limits::ALIASES {
            return Err(FieldError {
                field: "aliases",
                problem: Problem::TooMany(limits::ALIASES),
            });
        }
        let aliases = aliases
            .iter()
            .map(|(f, g)| {
                Ok(Name {
                    family: name_field(f, true)?,
                    given: name_field(g, false)?,
                })
            })
            .collect::<Result<_, Problem>>()
            .map_err(field("aliases"))?;
        Ok(Identity {
            name: Name { family, given },
            date_of_birth,
            aliases,
        })
    }
}

/// A national record: its identity, the optional descriptive fields and the payload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The record's id.
    pub id: RecordId,
    /// What is matched on.
    pub identity: Identity,
    /// Sex, when known.
    pub sex: Option<Sex>,
    /// Place of birth, when known.
    pub place_of_birth: Option<String>,
    /// ISO 3166-1 codes.
    pub nationalities: Vec<String>,
    /// Further columns: never indexed, released only through an approved follow-up.
    pub payload: BTreeMap<String, String>,
}

/// What is wrong with a field. Never carries the field's value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// A required field is empty or absent.
    #[error("is required")]
    Missing,
    /// The field is longer than its limit.
    #[error("is longer than {0}")]
    TooLong(usize),
    /// The field holds more items than its limit.
    #[error("has more than {0} items")]
    TooMany(usize),
    /// The field does not have the required form.
    #[error("is invalid: {0}")]
    Invalid(&'static str),
    /// The record id already appeared earlier in the file.
    #[error("repeats the record id of line {0}")]
    Duplicate(u64),
}

/// Checks a column (or payload field) name: 1-64 bytes of `a-z0-9_`.
pub fn check_column_name(name: &str) -> Result<(), Problem> {
    if name.is_empty() {
        return Err(Problem::Missing);
    }
    if name.len() > limits::COLUMN_NAME_BYTES {
        return Err(Problem::TooLong(limits::COLUMN_NAME_BYTES));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(Problem::Invalid("column names are a-z, 0-9 and _"));
    }
    Ok(())
}

fn name_field(value: &str, required: bool) -> Result<String, Problem> {
    let value = value.trim();
    if value.chars().count() > limits::NAME_CHARS {
        return Err(Problem::TooLong(limits::NAME_CHARS));
    }
    if value.chars().any(char::is_control) {
        return Err(Problem::Invalid("control characters are not allowed"));
    }
    if required && value.is_empty() {
        return Err(Problem::Missing);
    }
    if required && !value.chars().any(char::is_alphanumeric) {
        return Err(Problem::Invalid("has no letters or digits"));
    }
    Ok(value.to_owned())
}

/// Parses an optional sex field: empty is unknown.
pub fn parse_sex(value: &str) -> Result<Option<Sex>, Problem> {
    match value.trim() {
        "" => Ok(None),
        v => Sex::parse(v).map(Some),
    }
}

/// Parses an optional place of birth: empty is unknown; at most 200 characters.
pub fn parse_place_of_birth(value: &str) -> Result<Option<String>, Problem> {
    match value.trim() {
        "" => Ok(None),
        v if v.chars().count() > limits::PLACE_CHARS => Err(Problem::TooLong(limits::PLACE_CHARS)),
        v => Ok(Some(v.to_owned())),
    }
}

/// Parses `;`-separated ISO 3166-1 codes (two or three upper-case letters).
pub fn parse_nationalities(value: &str) -> Result<Vec<String>, Problem> {
    let codes: Vec<String> = value
        .split(';')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
        .collect();
    if codes.len() > limits::NATIONALITIES {
        return Err(Problem::TooMany(limits::NATIONALITIES));
    }
    if codes
        .iter()
        .any(|c| !(2..=3).contains(&c.len()) || !c.bytes().all(|b| b.is_ascii_uppercase()))
    {
        return Err(Problem::Invalid("expected ISO 3166-1 codes such as FR;DE"));
    }
    Ok(codes)
}

/// Parses `;`-separated `family/given` pairs.
pub fn parse_aliases(value: &str) -> Result<Vec<(String, String)>, Problem> {
    let mut out = Vec::new();
    for pair in value.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((family, given)) = pair.split_once('/') else {
            return Err(Problem::Invalid(
                "expected family/given pairs separated by ;",
            ));
        };
        out.push((family.to_owned(), given.to_owned()));
        if out.len() > limits::ALIASES {
            return Err(Problem::TooMany(limits::ALIASES));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csv(text: &str, on_bad_row: OnBadRow) -> Result<RecordFile, FileError> {
        read_records(text.as_bytes(), Format::Csv, on_bad_row)
    }

    const HEADER: &str = "record_id,family_name,given_names,date_of_birth,sex,place_of_birth,nationality,aliases,offence\n";

    #[test]
    fn reads_csv_with_payload_aliases_and_partial_dates() {
        let file = csv(
            &format!(
                "{HEADER}r1,García López,Ana María,1980-02-29,F,Sevilla,ES;FR,Lopez/Ana;Garcia/Maria,theft\n\
                 r2,Madonna,,1958,,,,,\n"
            ),
            OnBadRow::Fail,
        )
        .expect("valid file");
        assert_eq!(file.records.len(), 2);
        let r1 = &file.records[0];
        assert_eq!(r1.identity.name.family, "García López");
        assert_eq!(r1.identity.aliases.len(), 2);
        assert_eq!(r1.nationalities, ["ES", "FR"]);
        assert_eq!(r1.payload.get("offence").map(String::as_str), Some("theft"));
        assert_eq!(r1.identity.date_of_birth.to_string(), "1980-02-29");
        let r2 = &file.records[1];
        assert_eq!(r2.identity.name.given, "");
        assert_eq!(r2.identity.date_of_birth, DateOfBirth::Year { year: 1958 });
    }

    #[test]
    fn reports_each_bad_row_with_line_and_field() {
        let text = format!(
            "{HEADER}r1,Doe,John,1970-01-01,,,,,\n\
             r2,,John,1970-01-01,,,,,\n\
             r3,Doe,John,1970-02-30,,,,,\n\
             r 4,Doe,John,1970-01-01,,,,,\n\
             r1,Doe,John,1970-01-01,,,,,\n\
             r6,Doe,John,1970-01-01,Q,,,,\n\
             r7,Doe,John\n"
        );
        let Err(FileError::BadRows { errors, total }) = csv(&text, OnBadRow::Fail) else {
            panic!("expected bad rows");
        };
        assert_eq!(total, 6);
        let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "line 3: field `family_name` is required",
                "line 4: field `date_of_birth` is invalid: no such day in that month",
                "line 5: field `record_id` is invalid: only A-Za-z0-9._:- are allowed",
                "line 6: field `record_id` repeats the record id of line 2",
                "line 7: field `sex` is invalid: expected M, F, X or U",
                "line 8: has 3 fields, the header has 9",
            ]
        );
        // Errors never echo the value.
        assert!(
            shown
                .iter()
                .all(|e| !e.contains("Doe") && !e.contains("John"))
        );
    }

    #[test]
    fn skip_invalid_keeps_good_rows() {
        let text = format!("{HEADER}r1,Doe,John,1970-01-01,,,,,\nr2,Doe,John,19700101,,,,,\n");
        let file = csv(&text, OnBadRow::Skip).expect("skipped");
        assert_eq!(file.records.len(), 1);
        assert_eq!(file.skipped_total, 1);
        assert_eq!(file.skipped[0].line(), 3);
    }

    #[test]
    fn refuses_header_without_required_columns_and_long_fields() {
        let err = csv("record_id,family_name,given_names\n", OnBadRow::Fail).unwrap_err();
        assert_eq!(
            err.to_string(),
            "header: required column `date_of_birth` is missing"
        );
        let jsonl =
            r#"{"record_id":"r1","family_name":"Doe","given_names":"John","date_of_birth":"1970"}"#;
        let err = csv(&format!("{jsonl}\n"), OnBadRow::Fail).unwrap_err();
        assert!(
            err.to_string().contains("looks like JSON Lines") && err.to_string().contains(".jsonl"),
            "{err}"
        );
        let long = "x".repeat(limits::NAME_CHARS + 1);
        let err = csv(
            &format!("{HEADER}r1,{long},John,1970-01-01,,,,,\n"),
            OnBadRow::Fail,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("line 2: field `family_name` is longer than 200")
        );
    }

    #[test]
    fn reads_json_lines_with_line_numbers() {
        let text = "{\"record_id\":\"a\",\"family_name\":\"Müller\",\"given_names\":\"Hans\",\"date_of_birth\":\"1970-05-12\",\"case\":\"x\"}\n\
                    \n\
                    {\"record_id\":\"b\",\"family_name\":\"X\",\"given_names\":\"Y\",\"date_of_birth\":1970}\n\
                    not json\n";
        let Err(FileError::BadRows { errors, .. }) =
            read_records(text.as_bytes(), Format::JsonLines, OnBadRow::Fail)
        else {
            panic!("expected bad rows");
        };
        assert_eq!(
            errors[0].to_string(),
            "line 3: field `date_of_birth` is invalid: must be a string or null"
        );
        assert_eq!(errors[1].to_string(), "line 4: is not a JSON object");
        let ok = read_records(
            text.lines().next().unwrap_or_default().as_bytes(),
            Format::JsonLines,
            OnBadRow::Fail,
        )
        .expect("one good line");
        assert_eq!(
            ok.records[0].payload.get("case").map(String::as_str),
            Some("x")
        );
    }

    #[test]
    fn refuses_duplicate_json_keys_nul_in_payload_and_names_without_letters() {
        let jsonl = |text: &str| read_records(text.as_bytes(), Format::JsonLines, OnBadRow::Fail);
        let twice = jsonl(
            "{\"record_id\":\"a\",\"family_name\":\"X\",\"family_name\":\"Y\",\"date_of_birth\":\"1970\"}\n",
        );
        let Err(FileError::BadRows { errors, .. }) = twice else {
            panic!("a duplicate key is refused");
        };
        assert_eq!(
            errors[0].to_string(),
            "line 1: field `family_name` is invalid: appears twice in the object"
        );

        let nul = csv(
            &format!("{HEADER}r1,Doe,John,1970-01-01,,,,,a\0b\n"),
            OnBadRow::Fail,
        );
        let Err(FileError::BadRows { errors, .. }) = nul else {
            panic!("NUL in a payload value is refused");
        };
        assert_eq!(
            errors[0].to_string(),
            "line 2: field `offence` is invalid: holds a NUL character"
        );

        let offences = "record_id,family_name,given_names,date_of_birth,offence_category\n\
                        r1,Doe,John,1970-01-01,030100\n\
                        r2,Doe,Jane,1970-01-01,banana\n";
        let Err(FileError::BadRows { errors, .. }) = csv(offences, OnBadRow::Fail) else {
            panic!("an offence category outside the table's form is refused");
        };
        assert_eq!(
            errors[0].to_string(),
            "line 3: field `offence_category` is invalid: is not an ECRIS offence category code such as `0301 00`"
        );
        let Ok(read) = csv(offences, OnBadRow::Skip) else {
            panic!("read, skipping the bad row");
        };
        assert_eq!(
            read.records[0]
                .payload
                .get("offence_category")
                .map(String::as_str),
            Some("0301 00"),
            "kept in the table's spelling"
        );

        let punctuation = csv(
            &format!("{HEADER}r1,?!--,John,1970-01-01,,,,,\n"),
            OnBadRow::Fail,
        );
        let Err(FileError::BadRows { errors, .. }) = punctuation else {
            panic!("a name of punctuation only is refused");
        };
        assert_eq!(
            errors[0].to_string(),
            "line 2: field `family_name` is invalid: has no letters or digits"
        );
    }

    #[test]
    fn a_byte_order_mark_starts_csv_and_json_lines_alike() {
        let line = "{\"record_id\":\"a\",\"family_name\":\"X\",\"given_names\":\"Y\",\"date_of_birth\":\"1970\"}\n";
        let jsonl = read_records(
            format!("\u{feff}{line}").as_bytes(),
            Format::JsonLines,
            OnBadRow::Fail,
        )
        .expect("JSON Lines with a BOM");
        assert_eq!(jsonl.records.len(), 1);
        let csv_file = csv(
            &format!("\u{feff}{HEADER}r1,Doe,John,1970-01-01,,,,,\n"),
            OnBadRow::Fail,
        )
        .expect("CSV with a BOM");
        assert_eq!(csv_file.records.len(), 1);
        // Not further in: a BOM inside the file is no start of it.
        assert!(
            read_records(
                format!("{line}\u{feff}{line}").as_bytes(),
                Format::JsonLines,
                OnBadRow::Fail,
            )
            .is_err()
        );
    }

    #[test]
    fn parses_dates() {
        assert!(DateOfBirth::parse("2000-02-29").is_ok());
        assert!(DateOfBirth::parse("1900-02-29").is_err());
        assert!(DateOfBirth::parse("1970-13").is_err());
        assert!(DateOfBirth::parse("70-01-01").is_err());
        assert!(DateOfBirth::parse("1700").is_err());
        assert_eq!(
            DateOfBirth::parse("1970-05").map(|d| d.to_string()),
            Ok("1970-05".to_owned())
        );
    }
}
