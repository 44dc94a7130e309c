//! Match key scheme v2: normalise an identity, derive match keys of several kinds, and
//! key each text with the answering node's own oblivious PRF ([`oprf`]).
//!
//! The normative description is `docs/match-keys.md`; `docs/match-keys-v2.vectors.json`
//! holds test vectors that the tests check byte for byte. Any change to what this module
//! produces is a new scheme version, not a fix.
//!
//! Cleartext key material ([`KeyMaterial`]) exists only between reading an identity and
//! keying or blinding it. It has no `Display`, and its `Debug` hides the text.

use std::{collections::BTreeSet, fmt, rc::Rc};

use ring::{hkdf, hmac};

use crate::domain::identity::{DateOfBirth, Identity};

mod normalise;
pub mod oprf;
use normalise::phonetic_cached;
pub use normalise::{NormalName, PARTICLES, normalise, phonetic};

/// The scheme version this module implements.
pub const SCHEME_VERSION: u32 = 2;
/// Bytes of PRF output kept as the digest (128 bits).
pub const DIGEST_BYTES: usize = 16;
/// HKDF salt of [`HmacKey`], the fast keyed PRF of `match-test` and unit tests.
pub const HMAC_KEY_SALT: &[u8] = b"adep match keys v1";

/// How much a hit through a key kind is worth.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Quality {
    /// Plausible: one name, or names with a tolerant date.
    Weak,
    /// The same person written differently.
    Strong,
    /// The same normalised identity.
    Exact,
}

impl Quality {
    /// Every quality, best first.
    pub const ALL: [Quality; 3] = [Quality::Exact, Quality::Strong, Quality::Weak];

    /// The quality of a name, as [`Quality::name`] writes it.
    pub fn from_name(name: &str) -> Option<Quality> {
        Quality::ALL.into_iter().find(|q| q.name() == name)
    }

    /// The lower-case name used in CLI output and files.
    pub fn name(&self) -> &'static str {
        match self {
            Quality::Exact => "exact",
            Quality::Strong => "strong",
            Quality::Weak => "weak",
        }
    }
}

impl fmt::Display for Quality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The kinds of match key. Codes are part of the protocol; never reuse one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyKind {
    /// Joined family name, joined given names, date of birth as recorded.
    Full = 1,
    /// Joined names, full date with day and month in ascending order.
    DayMonthSwap = 2,
    /// The two joined names in alphabetical order, date of birth.
    OrderFree = 3,
    /// Joined family name, first given name, date of birth.
    FirstGiven = 4,
    /// One family name part (no particles), first given name, date of birth.
    SurnamePart = 5,
    /// Double Metaphone codes of the joined family name and first given name, date.
    Phonetic = 6,
    /// Joined family name, first given name, and one date with a part masked.
    TolerantDate = 7,
    /// One name part (family or given), date of birth.
    NamePart = 8,
    /// Double Metaphone code of one name part, date of birth.
    PhoneticPart = 9,
    /// Joined family name with at most one letter deleted, date of birth.
    FamilyEdit = 10,
    /// First given name with at most one letter deleted, date of birth.
    GivenEdit = 11,
    /// Joined family name and date of birth, for a query without given names.
    /// One-sided: records always carry it, queries only when they have no given name.
    GivenUnknown = 12,
}

impl KeyKind {
    /// Every kind, in code order.
    pub const ALL: [KeyKind; 12] = [
        KeyKind::Full,
        KeyKind::DayMonthSwap,
        KeyKind::OrderFree,
        KeyKind::FirstGiven,
        KeyKind::SurnamePart,
        KeyKind::Phonetic,
        KeyKind::TolerantDate,
        KeyKind::NamePart,
        KeyKind::PhoneticPart,
        KeyKind::FamilyEdit,
        KeyKind::GivenEdit,
        KeyKind::GivenUnknown,
    ];

    /// The protocol code.
    pub fn code(self) -> u32 {
        self as u32
    }

    /// The kind for a protocol code.
    pub fn from_code(code: u32) -> Option<KeyKind> {
        KeyKind::ALL.into_iter().find(|k| k.code() == code)
    }

    /// The kind's name, which is also the first field of its key text.
    pub fn name(self) -> &'static str {
        match self {
            KeyKind::Full => "full",
            KeyKind::DayMonthSwap => "dmswap",
            KeyKind::OrderFree => "orderfree",
            KeyKind::FirstGiven => "firstgiven",
            KeyKind::SurnamePart => "surnamepart",
            KeyKind::Phonetic => "phonetic",
            KeyKind::TolerantDate => "tolerantdate",
            KeyKind::NamePart => "namepart",
            KeyKind::PhoneticPart => "phoneticpart",
            KeyKind::FamilyEdit => "familyedit",
            KeyKind::GivenEdit => "givenedit",
            KeyKind::GivenUnknown => "givenunknown",
        }
    }

    /// The grade of a hit through this kind.
    pub fn quality(self) -> Quality {
        match self {
            KeyKind::Full => Quality::Exact,
            KeyKind::DayMonthSwap
            | KeyKind::OrderFree
            | KeyKind::FirstGiven
            | KeyKind::SurnamePart
            | KeyKind::Phonetic
            | KeyKind::GivenUnknown => Quality::Strong,
            KeyKind::TolerantDate
            | KeyKind::NamePart
            | KeyKind::PhoneticPart
            | KeyKind::FamilyEdit
            | KeyKind::GivenEdit => Quality::Weak,
        }
    }
}

/// The kinds through which one record matched one subject.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct KindSet(u16);

impl KindSet {
    /// Adds a kind.
    pub fn insert(&mut self, kind: KeyKind) {
        self.0 |= 1 << kind.code();
    }

    /// Whether a kind is in the set.
    pub fn contains(&self, kind: KeyKind) -> bool {
        self.0 & (1 << kind.code()) != 0
    }

    /// The quality of a hit through these kinds: the best grade of any of them, and at
    /// least strong when both names matched within one edit ([`KeyKind::FamilyEdit`]
    /// and [`KeyKind::GivenEdit`]) with the same complete date. None for an empty set.
    pub fn quality(&self) -> Option<Quality> {
        let best = KeyKind::ALL
            .into_iter()
            .filter(|k| self.contains(*k))
            .map(KeyKind::quality)
            .max()?;
        if self.contains(KeyKind::FamilyEdit) && self.contains(KeyKind::GivenEdit) {
            return Some(best.max(Quality::Strong));
        }
        Some(best)
    }
}

/// A match key before hashing: its kind and its text. Personal data.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyMaterial {
    kind: KeyKind,
    text: String,
}

impl KeyMaterial {
    /// The key's kind.
    pub fn kind(&self) -> KeyKind {
        self.kind
    }

    /// The exact bytes that are hashed. For the spec's test vectors only.
    pub fn text(&self) -> &str {
        &self.text
    }
}

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyMaterial({}, ..)", self.kind.name())
    }
}

/// Which side of a match an identity is on. A few kinds are one-sided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// A record held in a node's index.
    Record,
    /// A search subject.
    Query,
}

/// Derives every match key of an identity, sorted and without duplicates.
pub fn derive_keys(identity: &Identity, side: Side) -> Vec<KeyMaterial> {
    let mut keys = BTreeSet::new();
    for_each_key(identity, side, &mut |kind, text| {
        keys.insert(KeyMaterial {
            kind,
            text: text.to_owned(),
        });
    });
    keys.into_iter().collect()
}

/// Calls `emit` with the kind and text of every key of an identity (duplicates
/// possible), reusing one buffer: the hot path of indexing.
fn for_each_key(identity: &Identity, side: Side, emit: &mut dyn FnMut(KeyKind, &str)) {
    let mut buffer = String::with_capacity(64);
    let mut add = |kind: KeyKind, parts: &[&str]| {
        buffer.clear();
        buffer.push_str(kind.name());
        for part in parts {
            buffer.push('|');
            buffer.push_str(part);
        }
        emit(kind, &buffer);
    };
    let date = identity.date_of_birth;
    for name in std::iter::once(&identity.name).chain(&identity.aliases) {
        name_keys(&NormalName::new(name), date, side, &mut add);
    }
}

/// Calls `f` with the string itself and every string made by deleting one of its
/// bytes (only the string itself when it is shorter than 4 bytes).
fn for_each_deletion(token: &str, f: &mut dyn FnMut(&str)) {
    f(token);
    if token.len() < 4 || !token.is_ascii() {
        return;
    }
    let mut variant = String::with_capacity(token.len());
    for i in 0..token.len() {
        variant.clear();
        variant.push_str(&token[..i]);
        variant.push_str(&token[i + 1..]);
        f(&variant);
    }
}

fn name_keys(
    name: &NormalName,
    date: DateOfBirth,
    side: Side,
    add: &mut dyn FnMut(KeyKind, &[&str]),
) {
    let family = name.family_joined();
    if family.is_empty() {
        return;
    }
    let given = name.given_joined();
    let first = name.given.first().map(String::as_str).unwrap_or("");
    let dob = date.to_string();
    let complete = matches!(date, DateOfBirth::Full { .. });

    add(KeyKind::Full, &[&family, &given, &dob]);
    if let DateOfBirth::Full { year, month, day } = date {
        let (low, high) = (month.min(day), month.max(day));
        add(
            KeyKind::DayMonthSwap,
            &[&family, &given, &format!("{year:04}-{low:02}-{high:02}")],
        );
    }
    if !given.is_empty() {
        let (a, b) = if family <= given {
            (&family, &given)
        } else {
            (&given, &family)
        };
        add(KeyKind::OrderFree, &[a, b, &dob]);
    }
    add(KeyKind::FirstGiven, &[&family, first, &dob]);
    for part in name.family_parts() {
        add(KeyKind::SurnamePart, &[part, first, &dob]);
    }
    let first_codes: Rc<[String]> = if first.is_empty() {
        Rc::new([String::new()])
    } else {
        phonetic_cached(first)
    };
    let family_codes = phonetic_cached(&family);
    for f in family_codes.iter() {
        for g in first_codes.iter() {
            add(KeyKind::Phonetic, &[f, g, &dob]);
        }
    }
    if complete {
        for_each_deletion(&family, &mut |v| add(KeyKind::FamilyEdit, &[v, &dob]));
        if !first.is_empty() {
            for_each_deletion(first, &mut |v| add(KeyKind::GivenEdit, &[v, &dob]));
        }
        if side == Side::Record || given.is_empty() {
            add(KeyKind::GivenUnknown, &[&family, &dob]);
        }
    }
    for masked in tolerant_dates(date) {
        add(KeyKind::TolerantDate, &[&family, first, &masked]);
    }
    if complete {
        let parts = name
            .family_parts()
            .chain(name.given.iter().map(String::as_str))
            .filter(|t| t.len() >= 2);
        for part in parts {
            add(KeyKind::NamePart, &[part, &dob]);
            // Most parts are the joined family name or the first given name, whose
            // codes are known already.
            let codes = if part == family {
                family_codes.clone()
            } else if part == first {
                first_codes.clone()
            } else {
                phonetic_cached(part)
            };
            for code in codes.iter().filter(|c| !c.is_empty()) {
                add(KeyKind::PhoneticPart, &[code, &dob]);
            }
        }
    }
}

/// The date forms of [`KeyKind::TolerantDate`]: the year alone, and each full date
/// with one of its parts masked (`?`).
fn tolerant_dates(date: DateOfBirth) -> Vec<String> {
    match date {
        DateOfBirth::Full { year, month, day } => vec![
            format!("{year:04}"),
            format!("{year:04}-{month:02}"),
            format!("{year:04}-?-{day:02}"),
            format!("?-{month:02}-{day:02}"),
        ],
        DateOfBirth::YearMonth { year, month } => {
            vec![format!("{year:04}"), format!("{year:04}-{month:02}")]
        }
        DateOfBirth::Year { year } => vec![format!("{year:04}")],
    }
}

/// A key epoch: which of a node's keys a digest was made under.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyEpoch(pub u32);

impl fmt::Display for KeyEpoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A keyed digest of one match key: the first 128 bits of the PRF's output.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(pub [u8; DIGEST_BYTES]);

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Digest(..)")
    }
}

impl TryFrom<&[u8]> for Digest {
    type Error = usize;

    /// Fails with the length when it is not [`DIGEST_BYTES`].
    fn try_from(bytes: &[u8]) -> Result<Digest, usize> {
        bytes.try_into().map(Digest).map_err(|_| bytes.len())
    }
}

/// A keyed, hashed match key as it travels to peers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HashedKey {
    /// The key's kind.
    pub kind: KeyKind,
    /// Its digest.
    pub digest: Digest,
}

/// A keyed PRF over key texts under one epoch: a node's own OPRF key
/// ([`oprf::NodeKey`]), or the fast [`HmacKey`] where only which keys coincide matters.
pub trait KeyedDigest: Sync {
    /// The epoch this key belongs to.
    fn epoch(&self) -> KeyEpoch;

    /// The digest of one key text.
    fn digest_text(&self, text: &[u8]) -> Digest;

    /// The digest of one key.
    fn digest(&self, key: &KeyMaterial) -> Digest {
        self.digest_text(key.text.as_bytes())
    }

    /// Every keyed match key of an identity, sorted and without duplicates.
    fn hash_identity(&self, identity: &Identity, side: Side) -> Vec<HashedKey> {
        let mut keys = Vec::with_capacity(48);
        for_each_key(identity, side, &mut |kind, text| {
            keys.push(HashedKey {
                kind,
                digest: self.digest_text(text.as_bytes()),
            });
        });
        keys.sort_unstable_by_key(|k| (k.kind, k.digest));
        keys.dedup();
        keys
    }
}

/// A fast keyed PRF (HMAC-SHA256 under an HKDF key per epoch), for `adep match-test`
/// and unit tests of matching: which keys of two identities coincide does not depend
/// on the PRF, and this one is about a hundred times cheaper than the OPRF. Never
/// keys a node's index.
pub struct HmacKey {
    epoch: KeyEpoch,
    key: hmac::Key,
}

impl fmt::Debug for HmacKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HmacKey(epoch {})", self.epoch)
    }
}

impl HmacKey {
    /// Derives the epoch's HMAC key: HKDF-SHA256 with salt [`HMAC_KEY_SALT`], the
    /// secret as input keying material, and info `epoch <decimal epoch>`.
    pub fn from_secret_bytes(secret: &[u8], epoch: KeyEpoch) -> HmacKey {
        let info = format!("epoch {}", epoch.0);
        let info = [info.as_bytes()];
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, HMAC_KEY_SALT).extract(secret);
        let key = match prk.expand(&info, hmac::HMAC_SHA256) {
            Ok(okm) => hmac::Key::from(okm),
            // Unreachable: 32 bytes is far below HKDF's limit of 255 * 32.
            Err(ring::error::Unspecified) => hmac::Key::new(hmac::HMAC_SHA256, secret),
        };
        HmacKey { epoch, key }
    }
}

impl KeyedDigest for HmacKey {
    fn epoch(&self) -> KeyEpoch {
        self.epoch
    }

    fn digest_text(&self, text: &[u8]) -> Digest {
        let tag = hmac::sign(&self.key, text);
        let mut digest = [0u8; DIGEST_BYTES];
        digest.copy_from_slice(&tag.as_ref()[..DIGEST_BYTES]);
        Digest(digest)
    }
}

#[cfg(test)]
mod tests {
    use super::normalise::fold_digraphs;
    use super::*;

    #[test]
    fn normalises_scripts_case_diacritics_and_punctuation() {
        assert_eq!(normalise("MÜLLER"), ["muller"]);
        assert_eq!(normalise("Mueller"), ["muller"]);
        assert_eq!(normalise("Strauß"), ["strauss"]);
        assert_eq!(normalise("García-López"), ["garcia", "lopez"]);
        assert_eq!(normalise("O'Brien"), ["obrien"]);
        assert_eq!(normalise("van der Berg"), ["van", "der", "berg"]);
        assert_eq!(normalise("Ｍｕｌｌｅｒ"), ["muller"]);
        assert_eq!(normalise("Гусев"), ["gusev"]);
        assert_eq!(normalise("  "), Vec::<String>::new());
    }

    #[test]
    fn folding_digraphs_in_one_pass_equals_three_replacements() {
        let mut rng = crate::tooling::synthetic::Rng::new(5);
        for _ in 0..20_000 {
            let len = rng.below(9);
            let token: String = (0..len)
                .map(|_| ['a', 'e', 'o', 'u', 'x'][rng.below(5)])
                .collect();
            let expected = token
                .replace("ae", "a")
                .replace("oe", "o")
                .replace("ue", "u");
            assert_eq!(fold_digraphs(&token), expected, "{token}");
        }
    }

    #[test]
    fn kinds_round_trip_their_codes() {
        for kind in KeyKind::ALL {
            assert_eq!(KeyKind::from_code(kind.code()), Some(kind));
        }
        assert_eq!(KeyKind::from_code(0), None);
        assert_eq!(KeyKind::from_code(13), None);
    }

    #[test]
    fn epochs_and_seeds_give_different_digests() {
        let identity = Identity::from_fields("Doe", "John", "1970-01-01", &[]).expect("valid");
        let key =
            |seed: u8, epoch| oprf::NodeKey::derive(&[seed; 32], KeyEpoch(epoch)).expect("key");
        let a = key(7, 1).hash_identity(&identity, Side::Record);
        let b = key(7, 2).hash_identity(&identity, Side::Record);
        let c = key(8, 1).hash_identity(&identity, Side::Record);
        assert_eq!(a, key(7, 1).hash_identity(&identity, Side::Record));
        assert_eq!(a.len(), b.len());
        assert!(a.iter().zip(&b).all(|(x, y)| x.digest != y.digest));
        assert!(a.iter().zip(&c).all(|(x, y)| x.digest != y.digest));
    }

    #[test]
    fn blinded_evaluation_gives_the_nodes_own_digests() {
        let owner = oprf::NodeKey::derive(&[9; 32], KeyEpoch(3)).expect("key");
        let other = oprf::NodeKey::derive(&[10; 32], KeyEpoch(3)).expect("key");
        let subjects = [
            Identity::from_fields("Müller", "Hans", "1970-01-01", &[]).expect("valid"),
            Identity::from_fields("Gusev", "", "1978", &[]).expect("valid"),
        ];
        let keys: Vec<Vec<KeyMaterial>> = subjects
            .iter()
            .map(|s| derive_keys(s, Side::Query))
            .collect();
        let blinded = oprf::Blinded::blind(keys).expect("random");
        let evaluated = owner.evaluate(blinded.elements()).expect("valid elements");
        let finalized = blinded.finalize(&evaluated).expect("valid answer");
        for (subject, keys) in subjects.iter().zip(&finalized) {
            assert_eq!(keys, &owner.hash_identity(subject, Side::Query));
            assert_ne!(keys, &other.hash_identity(subject, Side::Query));
        }
        // A blinded element reveals nothing stable: blinding again gives others.
        let again =
            oprf::Blinded::blind(vec![derive_keys(&subjects[0], Side::Query)]).expect("random");
        assert_ne!(again.elements()[0], blinded.elements()[0]);
    }

    #[test]
    fn malformed_or_missing_elements_are_named() {
        let key = oprf::NodeKey::derive(&[9; 32], KeyEpoch(1)).expect("key");
        let bad = vec![vec![oprf::Element([0xff; 32])]];
        assert_eq!(
            key.evaluate(&bad).unwrap_err().to_string(),
            "field `subjects[0].elements[0]`: not a ristretto255 element"
        );
        // The identity element is refused too.
        assert!(key.evaluate(&[vec![oprf::Element([0; 32])]]).is_err());
        let identity = Identity::from_fields("Doe", "John", "1970-01-01", &[]).expect("valid");
        let blinded =
            oprf::Blinded::blind(vec![derive_keys(&identity, Side::Query)]).expect("random");
        let mut evaluated = key.evaluate(blinded.elements()).expect("valid");
        evaluated[0].pop();
        assert!(matches!(
            blinded.finalize(&evaluated),
            Err(oprf::ElementError::Shape { subject: 0, .. })
        ));
        assert!(blinded.finalize(&[]).is_err());
    }
}
