//! Synthetic national records for benchmarks and demonstrations: deterministic for a
//! seed, European-looking names (some with diacritics, compound surnames, particles and
//! Cyrillic script), dates of birth from 1930 to 2005, and a small payload. Nobody real.

use std::collections::BTreeMap;

use crate::domain::identity::{DateOfBirth, Identity, Name, Record, RecordId, Sex};

const FAMILY_STEMS: [&str; 40] = [
    "Mül", "Schmi", "Gar", "Ross", "Kowal", "Nov", "Dub", "Jans", "Berg", "Lar", "Fer", "Mart",
    "Hoff", "Wag", "Becker", "Brun", "Costa", "Silv", "Petr", "Ivan", "Horv", "Nag", "Kov",
    "Papad", "Georg", "Lind", "Ols", "Nils", "Dup", "Lef", "Mor", "Rom", "Esp", "Bianch", "Conti",
    "Walsh", "Brenn", "Hal", "Wieland", "Zieg",
];
const FAMILY_ENDS: [&str; 25] = [
    "ler", "idt", "cía", "si", "ski", "ák", "ois", "sen", "ger", "son", "ez", "ini", "opoulos",
    "ov", "ová", "ath", "eau", "ini", "ström", "quist", "mann", "ens", "as", "elli", "er",
];
const FAMILY_MIDDLES: [&str; 12] = [
    "", "", "", "", "an", "er", "ov", "in", "el", "or", "ab", "us",
];
const GIVEN: [&str; 60] = [
    "Anna", "Hans", "María", "José", "Luca", "Giulia", "Jan", "Eva", "Pierre", "Marie", "Sofia",
    "Ivan", "Olga", "Nikos", "Eleni", "Karl", "Lena", "Piotr", "Zofia", "Jonas", "Emma", "Noah",
    "Liam", "Mia", "Lucas", "Léa", "Hugo", "Chloé", "Mateo", "Lucía", "Pablo", "Carmen", "Tomás",
    "Inês", "João", "Ana", "Miguel", "Sara", "Erik", "Ingrid", "Lars", "Astrid", "Sean", "Aoife",
    "Ciara", "Patrick", "Dmitri", "Natalia", "Yusuf", "Fatima", "Mohamed", "Amira", "Giorgos",
    "Katarina", "Marek", "Ewa", "Bence", "Réka", "Andrei", "Ioana",
];
const CYRILLIC: [(&str, &str); 6] = [
    ("Гусев", "Юрий"),
    ("Иванова", "Наталья"),
    ("Петров", "Дмитрий"),
    ("Смирнова", "Ольга"),
    ("Козлов", "Андрей"),
    ("Попова", "Елена"),
];
const PARTICLES: [&str; 5] = ["van der", "de", "von", "O'", "El"];
const OFFENCES: [&str; 6] = [
    "0101 00", "0301 00", "0401 00", "0703 00", "1001 00", "1101 00",
];

/// A small deterministic generator (SplitMix64).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for a seed.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number below `n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

/// The `i`th synthetic identity's name for a generator state.
fn name(rng: &mut Rng) -> Name {
    if rng.below(50) == 0 {
        let (family, given) = CYRILLIC[rng.below(CYRILLIC.len())];
        return Name {
            family: family.to_owned(),
            given: given.to_owned(),
        };
    }
    let mut family = format!(
        "{}{}{}",
        rng.pick(&FAMILY_STEMS),
        rng.pick(&FAMILY_MIDDLES),
        rng.pick(&FAMILY_ENDS)
    );
    match rng.below(20) {
        0 => family = format!("{} {family}", rng.pick(&PARTICLES)),
        1 | 2 => {
            family = format!(
                "{family} {}{}",
                rng.pick(&FAMILY_STEMS),
                rng.pick(&FAMILY_ENDS)
            );
        }
        _ => {}
    }
    let given = match rng.below(4) {
        0 => format!("{} {}", rng.pick(&GIVEN), rng.pick(&GIVEN)),
        _ => rng.pick(&GIVEN).to_owned(),
    };
    Name { family, given }
}

/// Record number `i` of the synthetic file for `seed` (the same every time).
pub fn record(seed: u64, i: u64) -> Record {
    let mut rng = Rng::new(seed ^ i.wrapping_mul(0xA24B_AED4_963E_E407));
    let name = name(&mut rng);
    let year = 1930 + rng.below(76) as u16;
    let month = 1 + rng.below(12) as u8;
    let day = 1 + rng.below(28) as u8;
    let sex = if rng.below(2) == 0 { Sex::F } else { Sex::M };
    let mut payload = BTreeMap::new();
    payload.insert(
        "offence_category".to_owned(),
        rng.pick(&OFFENCES).to_owned(),
    );
    payload.insert("file_reference".to_owned(), format!("NAT-{seed}-{i:08}"));
    payload.insert(
        "authority".to_owned(),
        "Synthetic Police Directorate".to_owned(),
    );
    Record {
        // Digits and dashes only: always a valid id.
        id: RecordId::try_from(format!("syn-{seed}-{i}")).unwrap_or_else(|_| unreachable_id()),
        identity: Identity {
            name,
            date_of_birth: DateOfBirth::Full { year, month, day },
            aliases: Vec::new(),
        },
        sex: Some(sex),
        place_of_birth: None,
        nationalities: Vec::new(),
        payload,
    }
}

#[allow(clippy::panic)]
fn unreachable_id() -> RecordId {
    panic!("synthetic record ids are always valid")
}

/// Records `0..count` of the synthetic file for `seed`.
pub fn records(seed: u64, count: u64) -> Vec<Record> {
    (0..count).map(|i| record(seed, i)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_records_are_deterministic_and_valid() {
        let a = records(7, 200);
        assert_eq!(a, records(7, 200));
        assert_ne!(a[0], record(8, 0));
        for r in &a {
            let i = &r.identity;
            let again = Identity::from_fields(
                &i.name.family,
                &i.name.given,
                &i.date_of_birth.to_string(),
                &[],
            )
            .expect("valid");
            assert_eq!(&again, i);
        }
    }
}
