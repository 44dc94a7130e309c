//! Step 1 of the scheme: names normalised (NFKC, case fold, transliteration, folded
//! equivalents, particles) into tokens, and their phonetic codes.

use std::{cell::RefCell, collections::HashMap, rc::Rc};

use rphonetic::DoubleMetaphone;
use unicode_normalization::UnicodeNormalization as _;

use crate::domain::identity::Name;

/// Family-name particles: kept inside the joined family name, left out of the parts.
/// Compared after normalisation.
pub const PARTICLES: [&str; 27] = [
    "al", "bin", "ben", "da", "dal", "de", "del", "della", "den", "der", "des", "di", "do", "dos",
    "du", "el", "ibn", "la", "le", "mac", "mc", "o", "st", "ten", "ter", "van", "von",
];

/// A name after normalisation: lower-case ASCII tokens.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct NormalName {
    /// Family name tokens, particles included.
    pub family: Vec<String>,
    /// Given name tokens.
    pub given: Vec<String>,
}

impl NormalName {
    /// Normalises both parts of a name.
    pub fn new(name: &Name) -> NormalName {
        NormalName {
            family: normalise(&name.family),
            given: normalise(&name.given),
        }
    }

    /// The family name tokens joined without separators (`van der Berg` → `vanderberg`).
    pub fn family_joined(&self) -> String {
        self.family.concat()
    }

    /// The given name tokens joined (`Jean-Pierre` → `jeanpierre`).
    pub fn given_joined(&self) -> String {
        self.given.concat()
    }

    /// Family name tokens that are not particles (`van der Berg` → `berg`).
    pub fn family_parts(&self) -> impl Iterator<Item = &str> {
        self.family
            .iter()
            .map(String::as_str)
            .filter(|t| !PARTICLES.contains(t))
    }
}

/// Normalises one name field into tokens (docs/match-keys.md, "Normalisation"):
/// NFKC, lower case, transliteration to ASCII, apostrophes removed, every other
/// character that is not a-z or 0-9 a separator, then the German digraphs ae, oe, ue
/// folded to a, o, u in each token.
pub fn normalise(text: &str) -> Vec<String> {
    // ASCII text is its own NFKC form and its own transliteration: skip both.
    let ascii = if text.is_ascii() {
        text.to_ascii_lowercase()
    } else {
        let nfkc: String = text.nfkc().collect::<String>().to_lowercase();
        deunicode::deunicode_with_tofu(&nfkc, " ").to_ascii_lowercase()
    };
    let mut tokens = Vec::new();
    let mut current = String::new();
    for c in ascii.chars() {
        match c {
            'a'..='z' | '0'..='9' => current.push(c),
            '\'' | '`' => {}
            _ => {
                if !current.is_empty() {
                    tokens.push(fold_digraphs(&current));
                    current.clear();
                }
            }
        }
    }
    if !current.is_empty() {
        tokens.push(fold_digraphs(&current));
    }
    tokens
}

/// `ae` → `a`, then `oe` → `o`, then `ue` → `u`, each over the whole token. One pass
/// gives the same result as the three replacements in turn: dropping the `e` of a
/// digraph leaves its vowel, which can never start a new digraph with what follows.
pub(super) fn fold_digraphs(token: &str) -> String {
    let bytes = token.as_bytes();
    let mut out = String::with_capacity(token.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        out.push(b as char);
        if matches!(b, b'a' | b'o' | b'u') && bytes.get(i + 1) == Some(&b'e') {
            i += 2;
        } else {
            i += 1;
        }
    }
    out
}

/// Double Metaphone codes (primary and, when different, alternate) of a token, in
/// lower case. Empty when the token has no consonant sound at all.
pub fn phonetic(token: &str) -> Vec<String> {
    let result = DoubleMetaphone::new(None).double_metaphone(token);
    let mut codes = vec![result.primary().to_ascii_lowercase()];
    let alternate = result.alternate().to_ascii_lowercase();
    if alternate != codes[0] {
        codes.push(alternate);
    }
    codes.retain(|c| !c.is_empty());
    codes
}

/// [`phonetic`], remembered per thread for the most recent few thousand tokens: names
/// repeat across a national file, and Double Metaphone costs as much as the rest of
/// a record's key assembly.
pub(super) fn phonetic_cached(token: &str) -> Rc<[String]> {
    const CAPACITY: usize = 8192;
    thread_local! {
        static CODES: RefCell<HashMap<String, Rc<[String]>>> = RefCell::new(HashMap::new());
    }
    CODES.with_borrow_mut(|codes| {
        if let Some(known) = codes.get(token) {
            return known.clone();
        }
        if codes.len() >= CAPACITY {
            codes.clear();
        }
        let computed: Rc<[String]> = phonetic(token).into();
        codes.insert(token.to_owned(), computed.clone());
        computed
    })
}
