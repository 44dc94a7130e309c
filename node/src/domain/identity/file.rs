//! Reading record files: CSV with a header row or JSON Lines with the same field
//! names, every row checked; a bad row is an error with its line number and field.

use std::{
    collections::{BTreeMap, HashSet},
    io::{BufRead, Read},
};

use super::*;

/// A field and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}` {problem}")]
pub struct FieldError {
    /// The column name.
    pub field: &'static str,
    /// What is wrong.
    pub problem: Problem,
}

/// A bad row of a file, or a bad file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RowError {
    /// A field of a row is wrong.
    #[error("line {line}: field `{field}` {problem}")]
    Field {
        /// 1-based line number in the file.
        line: u64,
        /// The column name.
        field: String,
        /// What is wrong.
        problem: Problem,
    },
    /// The row itself cannot be read (not UTF-8, wrong number of columns, not JSON...).
    #[error("line {line}: {problem}")]
    Row {
        /// 1-based line number in the file.
        line: u64,
        /// What is wrong.
        problem: String,
    },
}

impl RowError {
    /// The line the error is on.
    pub fn line(&self) -> u64 {
        match self {
            RowError::Field { line, .. } | RowError::Row { line, .. } => *line,
        }
    }
}

/// Errors that stop reading a file altogether.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The header row is missing a required column or is malformed.
    #[error("header: {0}")]
    Header(String),
    /// The file could not be read.
    #[error("read failed: {0}")]
    Io(#[from] std::io::Error),
    /// Bad rows, and the caller did not ask to skip them. Lists at most
    /// [`MAX_REPORTED_ERRORS`] rows; `total` counts them all.
    #[error("{total} bad row(s), first: {}", first_error(.errors))]
    BadRows {
        /// The first bad rows, in file order.
        errors: Vec<RowError>,
        /// How many rows were bad.
        total: usize,
    },
}

fn first_error(errors: &[RowError]) -> String {
    errors.first().map(ToString::to_string).unwrap_or_default()
}

/// How many bad rows a [`FileError::BadRows`] or [`RecordFile::skipped`] lists.
pub const MAX_REPORTED_ERRORS: usize = 100;

/// The format of a record file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// CSV with a header row.
    Csv,
    /// One JSON object per line, with the CSV column names as keys.
    JsonLines,
}

impl Format {
    /// Chooses the format from a file name: `.jsonl` / `.ndjson` are JSON Lines,
    /// anything else is CSV.
    pub fn from_path(path: &std::path::Path) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some("jsonl" | "ndjson") => Format::JsonLines,
            _ => Format::Csv,
        }
    }
}

/// What to do with bad rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnBadRow {
    /// Fail the whole file (the default: an import is all or nothing).
    Fail,
    /// Leave bad rows out and report them.
    Skip,
}

/// A file read into records.
#[derive(Debug, Default)]
pub struct RecordFile {
    /// Good records, in file order.
    pub records: Vec<Record>,
    /// Bad rows that were skipped (first [`MAX_REPORTED_ERRORS`]).
    pub skipped: Vec<RowError>,
    /// How many rows were skipped.
    pub skipped_total: usize,
}

/// Reads a whole record file. Record ids must be unique within it.
pub fn read_records(
    input: impl Read,
    format: Format,
    on_bad_row: OnBadRow,
) -> Result<RecordFile, FileError> {
    let mut file = RecordFile::default();
    let mut seen: HashSet<RecordId> = HashSet::new();
    let mut first_line: BTreeMap<RecordId, u64> = BTreeMap::new();
    let mut errors = Vec::new();
    let mut total = 0usize;
    let mut push = |row: Result<Record, RowError>, line: u64, file: &mut RecordFile| {
        let row = row.and_then(|record| {
            if seen.insert(record.id.clone()) {
                first_line.insert(record.id.clone(), line);
                Ok(record)
            } else {
                Err(RowError::Field {
                    line,
                    field: "record_id".into(),
                    problem: Problem::Duplicate(first_line.get(&record.id).copied().unwrap_or(0)),
                })
            }
        });
        match row {
            Ok(record) => file.records.push(record),
            Err(error) => {
                total += 1;
                if errors.len() < MAX_REPORTED_ERRORS {
                    errors.push(error);
                }
            }
        }
    };
    match format {
        Format::Csv => {
            let mut reader = csv::ReaderBuilder::new()
                .has_headers(true)
                .flexible(false)
                .from_reader(input);
            let header = reader
                .headers()
                .map_err(|e| FileError::Header(csv_problem(&e)))?
                .clone();
            let columns = Columns::from_header(header.iter()).map_err(|e| {
                // A JSON Lines file under another name reads as a CSV header of JSON.
                let json = header.get(0).is_some_and(|h| h.trim_start().starts_with('{'));
                match e {
                    FileError::Header(p) if json => FileError::Header(format!(
                        "{p}; the file looks like JSON Lines, which is read as such when its name ends in .jsonl"
                    )),
                    e => e,
                }
            })?;
            let mut row = csv::StringRecord::new();
            loop {
                match reader.read_record(&mut row) {
                    Ok(false) => break,
                    Ok(true) => {
                        let line = row.position().map_or(0, csv::Position::line);
                        let fields = columns
                            .names
                            .iter()
                            .zip(row.iter())
                            .map(|(n, v)| (n.as_str(), v));
                        push(record_from_fields(fields, line), line, &mut file);
                    }
                    Err(e) => {
                        let line = e.position().map_or(0, csv::Position::line);
                        if matches!(e.kind(), csv::ErrorKind::Io(_)) {
                            return Err(FileError::Io(std::io::Error::other(csv_problem(&e))));
                        }
                        push(
                            Err(RowError::Row {
                                line,
                                problem: csv_problem(&e),
                            }),
                            line,
                            &mut file,
                        );
                    }
                }
            }
        }
        Format::JsonLines => {
            let mut reader = std::io::BufReader::new(input);
            let mut buf = Vec::new();
            let mut line = 0u64;
            loop {
                buf.clear();
                let n = (&mut reader)
                    .take(limits::LINE_BYTES as u64 + 1)
                    .read_until(b'\n', &mut buf)?;
                if n == 0 {
                    break;
                }
                line += 1;
                if buf.len() > limits::LINE_BYTES && !buf.ends_with(b"\n") {
                    // Skip the rest of the over-long line, then report it.
                    let mut rest = Vec::new();
                    reader.read_until(b'\n', &mut rest)?;
                    push(
                        Err(RowError::Row {
                            line,
                            problem: format!("longer than {} bytes", limits::LINE_BYTES),
                        }),
                        line,
                        &mut file,
                    );
                    continue;
                }
                if buf.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                push(json_record(&buf, line), line, &mut file);
            }
        }
    }
    match on_bad_row {
        OnBadRow::Fail if total > 0 => Err(FileError::BadRows { errors, total }),
        _ => {
            file.skipped = errors;
            file.skipped_total = total;
            Ok(file)
        }
    }
}

fn csv_problem(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::Utf8 { .. } => "is not valid UTF-8".into(),
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!("has {len} fields, the header has {expected_len}"),
        csv::ErrorKind::Io(err) => err.kind().to_string(),
        _ => "cannot be read as CSV".into(),
    }
}

struct Columns {
    names: Vec<String>,
}

impl Columns {
    fn from_header<'a>(header: impl Iterator<Item = &'a str>) -> Result<Columns, FileError> {
        let names: Vec<String> = header.map(|h| h.trim().to_owned()).collect();
        if names.len() > limits::COLUMNS {
            return Err(FileError::Header(format!(
                "more than {} columns",
                limits::COLUMNS
            )));
        }
        let mut seen = HashSet::new();
        for (i, name) in names.iter().enumerate() {
            check_column_name(name)
                .map_err(|p| FileError::Header(format!("column {} {p}", i + 1)))?;
            if !seen.insert(name.as_str()) {
                return Err(FileError::Header(format!("column `{name}` appears twice")));
            }
        }
        for required in ["record_id", "family_name", "given_names", "date_of_birth"] {
            if !seen.contains(required) {
                return Err(FileError::Header(format!(
                    "required column `{required}` is missing"
                )));
            }
        }
        Ok(Columns { names })
    }
}

fn json_record(line_bytes: &[u8], line: u64) -> Result<Record, RowError> {
    let row_error = |problem: &str| RowError::Row {
        line,
        problem: problem.to_owned(),
    };
    let text = std::str::from_utf8(line_bytes).map_err(|_| row_error("is not valid UTF-8"))?;
    // A byte order mark may start the file, as in CSV.
    let text = if line == 1 {
        text.strip_prefix('\u{feff}').unwrap_or(text)
    } else {
        text
    };
    let Members(object) = serde_json::from_str(text).map_err(|e| {
        if e.to_string().contains(TOO_MANY) {
            row_error("has too many fields")
        } else {
            row_error("is not a JSON object")
        }
    })?;
    let mut seen = HashSet::with_capacity(object.len());
    let mut fields = Vec::with_capacity(object.len());
    for (key, value) in &object {
        check_column_name(key).map_err(|problem| RowError::Field {
            line,
            field: "(name)".into(),
            problem,
        })?;
        // Names are checked above: a column name, never a value, is repeated here.
        if !seen.insert(key.as_str()) {
            return Err(RowError::Field {
                line,
                field: key.clone(),
                problem: Problem::Invalid("appears twice in the object"),
            });
        }
        let text = match value {
            serde_json::Value::String(s) => s.as_str(),
            serde_json::Value::Null => "",
            _ => {
                return Err(RowError::Field {
                    line,
                    field: key.clone(),
                    problem: Problem::Invalid("must be a string or null"),
                });
            }
        };
        fields.push((key.as_str(), text));
    }
    for required in ["record_id", "family_name", "given_names", "date_of_birth"] {
        if !seen.contains(required) && required != "given_names" {
            return Err(RowError::Field {
                line,
                field: required.into(),
                problem: Problem::Missing,
            });
        }
    }
    record_from_fields(fields.into_iter(), line)
}

const TOO_MANY: &str = "more members than the columns of a record";

/// A JSON object's members in the order written, duplicates kept (so that they can be
/// refused: a JSON map keeps only the last). At most [`limits::COLUMNS`] of them.
struct Members(Vec<(String, serde_json::Value)>);

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Members, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Members;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Members, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry::<String, serde_json::Value>()? {
                    if members.len() == limits::COLUMNS {
                        return Err(serde::de::Error::custom(TOO_MANY));
                    }
                    members.push(member);
                }
                Ok(Members(members))
            }
        }
        d.deserialize_map(Visitor)
    }
}

/// Builds a record from (column, value) pairs. Unknown columns become payload.
fn record_from_fields<'a>(
    fields: impl Iterator<Item = (&'a str, &'a str)>,
    line: u64,
) -> Result<Record, RowError> {
    let mut id = None;
    let (mut family, mut given, mut dob) = ("", "", "");
    let mut sex = None;
    let mut place = None;
    let mut nationalities = Vec::new();
    let mut aliases = Vec::new();
    let mut payload = BTreeMap::new();
    let err = |field: &str, problem| RowError::Field {
        line,
        field: field.to_owned(),
        problem,
    };
    for (name, value) in fields {
        match name {
            "record_id" => {
                id = Some(RecordId::try_from(value.trim()).map_err(|p| err(name, p))?);
            }
            "family_name" => family = value,
            "given_names" => given = value,
            "date_of_birth" => dob = value,
            "sex" => sex = parse_sex(value).map_err(|p| err(name, p))?,
            "place_of_birth" => place = parse_place_of_birth(value).map_err(|p| err(name, p))?,
            "nationality" => {
                nationalities = parse_nationalities(value).map_err(|p| err(name, p))?;
            }
            "aliases" => aliases = parse_aliases(value).map_err(|p| err(name, p))?,
            _ => {
                if value.len() > limits::PAYLOAD_VALUE_BYTES {
                    return Err(err(name, Problem::TooLong(limits::PAYLOAD_VALUE_BYTES)));
                }
                if value.contains('\0') {
                    return Err(err(name, Problem::Invalid("holds a NUL character")));
                }
                // The offence category column, when a file has one, holds a code of the
                // ECRIS common table as searches and follow-ups do.
                if name == "offence_category" && !value.trim().is_empty() {
                    let code = crate::domain::reason::offence_category(value).ok_or_else(|| {
                        err(
                            name,
                            Problem::Invalid(
                                "is not an ECRIS offence category code such as `0301 00`",
                            ),
                        )
                    })?;
                    payload.insert(name.to_owned(), code);
                } else if !value.is_empty() {
                    payload.insert(name.to_owned(), value.to_owned());
                }
            }
        }
    }
    let id = id.ok_or_else(|| err("record_id", Problem::Missing))?;
    let identity =
        Identity::from_fields(family, given, dob, &aliases).map_err(|e| RowError::Field {
            line,
            field: e.field.to_owned(),
            problem: e.problem,
        })?;
    Ok(Record {
        id,
        identity,
        sex,
        place_of_birth: place,
        nationalities,
        payload,
    })
}
