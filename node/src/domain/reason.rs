//! The recorded reason for a query (Prüm II Art. 33): case reference, offence
//! category, person category and aim. All four are mandatory on a search and travel
//! with every Match to the peers' audit logs.

use std::fmt;

/// Longest case reference, in bytes.
pub const CASE_REFERENCE_BYTES: usize = 64;
/// Longest offence category code, in bytes.
pub const OFFENCE_CATEGORY_BYTES: usize = 16;

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
        Ok(Reason {
            case_reference: text("case_reference", case_reference, CASE_REFERENCE_BYTES)?,
            offence_category: text("offence_category", offence_category, OFFENCE_CATEGORY_BYTES)?,
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
