//! The recorded reason for a query (Prüm II Art. 33): case reference, offence
//! category, person category and aim. All four are mandatory on a search and travel
//! with every Match to the peers' audit logs.

use std::fmt;

/// Longest case reference, in bytes.
pub const CASE_REFERENCE_BYTES: usize = 64;
/// Longest offence category as typed, in bytes.
pub const OFFENCE_CATEGORY_BYTES: usize = 16;

/// An offence category in the form of the ECRIS common table, `CCSS NN`: typed as
/// `0301 00` or `030100`, kept as `0301 00`. Category `00` does not exist.
pub fn offence_category(text: &str) -> Option<String> {
    let text = text.trim();
    let digits = match text.len() {
        7 if text.as_bytes()[4] == b' ' => format!("{}{}", text.get(..4)?, text.get(5..)?),
        6 => text.to_owned(),
        _ => return None,
    };
    if !digits.bytes().all(|b| b.is_ascii_digit()) || digits.starts_with("00") {
        return None;
    }
    Some(format!("{} {}", &digits[..4], &digits[4..]))
}

/// The ECRIS common table as shipped (`node/data/ecris-offence-categories.tsv`):
/// comment lines naming the source, then one `code<TAB>title` line per category.
pub const OFFENCE_TABLE: &str = include_str!("../../data/ecris-offence-categories.tsv");

/// The shipped table's codes and titles, in order.
pub fn offence_table() -> impl Iterator<Item = (&'static str, &'static str)> {
    OFFENCE_TABLE
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split_once('\t'))
}

/// The shipped table's header: where it comes from and how complete it is.
pub fn offence_table_source() -> impl Iterator<Item = &'static str> {
    OFFENCE_TABLE
        .lines()
        .take_while(|l| l.starts_with('#'))
        .map(|l| l.trim_start_matches('#').trim_start())
}

/// Person category of a query.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum PersonCategory {
    /// Suspect.
    Suspect,
    /// Convicted person.
    Convicted,
    /// Victim.
    Victim,
    /// Missing person.
    MissingPerson,
    /// Unidentified human remains.
    UnidentifiedRemains,
}

impl PersonCategory {
    /// Every category.
    pub const ALL: [PersonCategory; 5] = [
        PersonCategory::Suspect,
        PersonCategory::Convicted,
        PersonCategory::Victim,
        PersonCategory::MissingPerson,
        PersonCategory::UnidentifiedRemains,
    ];

    /// The name used on the command line and in output.
    pub fn name(&self) -> &'static str {
        match self {
            PersonCategory::Suspect => "suspect",
            PersonCategory::Convicted => "convicted",
            PersonCategory::Victim => "victim",
            PersonCategory::MissingPerson => "missing-person",
            PersonCategory::UnidentifiedRemains => "unidentified-remains",
        }
    }
}

/// Aim of a query.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Aim {
    /// Identify a person.
    Identify,
    /// Learn more about a person already identified.
    LearnMore,
}

impl Aim {
    /// The name used on the command line and in output.
    pub fn name(&self) -> &'static str {
        match self {
            Aim::Identify => "identify",
            Aim::LearnMore => "learn-more",
        }
    }
}

/// A validated reason.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Reason {
    /// The requesting authority's case reference.
    pub case_reference: String,
    /// ECRIS common table offence category code.
    pub offence_category: String,
    /// Person category.
    pub person_category: PersonCategory,
    /// Aim.
    pub aim: Aim,
}

const OFFENCE_CATEGORY_PROBLEM: &str = "is not a code of the ECRIS common table of offence categories (Directive (EU) 2019/884, Annex): four digits, a space and two digits, such as `0301 00`; `adep offence-categories` lists them";

/// A reason field that is missing or malformed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("field `reason.{field}` {problem}")]
pub struct ReasonError {
    /// The field.
    pub field: &'static str,
    /// What is wrong.
    pub problem: &'static str,
}

impl Reason {
    /// Checks the text fields; the categories are typed already.
    pub fn new(
        case_reference: &str,
        offence_category: &str,
        person_category: Option<PersonCategory>,
        aim: Option<Aim>,
    ) -> Result<Reason, ReasonError> {
        let err = |field, problem| ReasonError { field, problem };
        let text = |field: &'static str, value: &str, max: usize| {
            let value = value.trim();
            if value.is_empty() {
                return Err(err(field, "is required"));
            }
            if value.len() > max {
                return Err(err(field, "is too long"));
            }
            if !value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_./: ".contains(&b))
            {
                return Err(err(field, "may hold only A-Z a-z 0-9 - _ . / : and spaces"));
            }
            Ok(value.to_owned())
        };
        let offence = text("offence_category", offence_category, OFFENCE_CATEGORY_BYTES).map_err(
            |e| match e.problem {
                "is required" => e,
                _ => err("offence_category", OFFENCE_CATEGORY_PROBLEM),
            },
        )?;
        Ok(Reason {
            case_reference: text("case_reference", case_reference, CASE_REFERENCE_BYTES)?,
            offence_category: self::offence_category(&offence)
                .ok_or(err("offence_category", OFFENCE_CATEGORY_PROBLEM))?,
            person_category: person_category.ok_or(err("person_category", "is required"))?,
            aim: aim.ok_or(err("aim", "is required"))?,
        })
    }
}

impl Reason {
    /// The reason fields as an audit event records them.
    pub fn audit_fields(&self) -> serde_json::Value {
        serde_json::json!({
            "case_reference": self.case_reference,
            "offence_category": self.offence_category,
            "person_category": self.person_category.name(),
            "aim": self.aim.name(),
        })
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "case {} offence {} {} {}",
            self.case_reference,
            self.offence_category,
            self.person_category.name(),
            self.aim.name()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offence_categories_take_the_form_of_the_ecris_table() {
        assert_eq!(offence_category("0301 00").as_deref(), Some("0301 00"));
        assert_eq!(offence_category(" 030100 ").as_deref(), Some("0301 00"));
        for bad in [
            "banana", "0301", "0301  00", "03 01 00", "0301-00", "0000 00", "0301 0x", "03010000",
        ] {
            assert_eq!(offence_category(bad), None, "{bad}");
        }
        let refused = Reason::new(
            "C-1",
            "banana",
            Some(PersonCategory::Suspect),
            Some(Aim::Identify),
        )
        .expect_err("not a code");
        assert_eq!(refused.field, "offence_category");
        assert!(
            refused.to_string().contains("ECRIS common table"),
            "{refused}"
        );
        assert!(!refused.to_string().contains("banana"), "no value echoed");
        let missing = Reason::new(
            "C-1",
            " ",
            Some(PersonCategory::Suspect),
            Some(Aim::Identify),
        )
        .expect_err("missing");
        assert_eq!(
            missing.to_string(),
            "field `reason.offence_category` is required"
        );
    }

    #[test]
    fn the_shipped_table_is_in_the_form_it_checks() {
        let table: Vec<_> = offence_table().collect();
        assert!(!table.is_empty());
        for (code, title) in table {
            assert_eq!(offence_category(code).as_deref(), Some(code), "{code}");
            assert!(!title.trim().is_empty() && !title.contains('\t'), "{code}");
        }
        assert!(offence_table_source().any(|l| l.contains("2019/884")));
    }
}
