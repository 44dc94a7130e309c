//! Names and dates as a search or a record file gives them: `Identity::from_fields` on
//! arbitrary text (lines: family name, given names, date of birth, then alias family
//! and given names in turn), then the match key scheme on both sides. Never a panic;
//! an accepted identity keeps its bounds; the keys are ASCII texts of their kind, the
//! hashed keys are the digests of exactly those texts. (A search subject may derive more
//! keys than a peer accepts, `limits.max_keys_per_subject`: `app::search` refuses it
//! by name before sending anything, which its unit test shows.)

#![no_main]

use std::collections::BTreeSet;

use adep_node::domain::{
    identity::{FieldError, Identity, limits},
    pseudonymise::{HmacKey, KeyEpoch, KeyedDigest, Side, derive_keys},
};
use adep_node_fuzz::{
    MARKER, check_identity, check_marked_refusal, check_refusal,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.split('\n').collect();
    // The same fields with a marker after one of them, in turn: no refusal names it.
    // Lines past the most aliases are refused by their count alone.
    for i in 0..lines.len().min(3 + 2 * limits::ALIASES + 2) {
        let mut marked: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
        marked[i].push_str(MARKER);
        if let Err(error) = identity(&marked) {
            check_marked_refusal(&error.to_string());
        }
    }
    let identity = match identity(&lines) {
        Ok(identity) => identity,
        Err(error) => {
            check_refusal(&error.to_string());
            return;
        }
    };
    check_identity(&identity);
    let pseudonymiser = HmacKey::from_secret_bytes(&[0x5a; 32], KeyEpoch(1));
    for side in [Side::Record, Side::Query] {
        let keys = derive_keys(&identity, side);
        for pair in keys.windows(2) {
            assert!(pair[0] < pair[1], "keys not sorted and unique");
        }
        for key in &keys {
            let text = key.text();
            assert!(text.is_ascii(), "a key text that is not ASCII");
            assert!(
                text.strip_prefix(key.kind().name())
                    .is_some_and(|rest| rest.starts_with('|')),
                "a key text that does not start with its kind"
            );
        }
        let hashed = pseudonymiser.hash_identity(&identity, side);
        let expected: BTreeSet<_> = keys
            .iter()
            .map(|k| (k.kind(), pseudonymiser.digest(k)))
            .collect();
        let got: BTreeSet<_> = hashed.iter().map(|k| (k.kind, k.digest)).collect();
        assert_eq!(got.len(), hashed.len(), "hashed keys repeat");
        assert!(
            got == expected,
            "hashed keys differ from the digests of the keys"
        );
    }
});

/// The identity of lines: family name, given names, date of birth, then alias family
/// and given names in turn.
fn identity(lines: &[impl AsRef<str>]) -> Result<Identity, FieldError> {
    let field = |i: usize| lines.get(i).map_or("", AsRef::as_ref);
    let aliases: Vec<(String, String)> = (3..lines.len())
        .step_by(2)
        .map(|i| (field(i).to_owned(), field(i + 1).to_owned()))
        .collect();
    Identity::from_fields(field(0), field(1), field(2), &aliases)
}
