//! The match key scheme's test vectors (docs/match-keys-v1.vectors.json), checked byte
//! for byte: normalisation, key texts and digests. Another implementation of
//! docs/match-keys.md must reproduce this file exactly.
//!
//! After an intended change of scheme (a new version), regenerate with
//! `ADEP_WRITE_VECTORS=1 cargo test -p adep-node --test match_key_vectors`.

use std::{fmt::Write as _, path::PathBuf};

use adep_node::{
    domain::identity::Identity,
    domain::pseudonymise::{self, KeyEpoch, Pseudonymiser, Side},
};
use serde_json::{Value, json};

const SECRET_HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

fn vectors() -> Value {
    let names = [
        "MÜLLER",
        "Mueller",
        "Strauß",
        "García-López",
        "van der Berg",
        "O'Brien",
        "Mc Carthy",
        "Jean-Pierre",
        "Гусев",
        "Юрий",
        "Παπαδόπουλος",
        "Γιώργος",
        "Ｍｕｌｌｅｒ",
        "El Amrani",
        "N'Diaye",
        "Øster-Ålund",
        "İlhan",
        "ŁUKASZ",
    ];
    let normalisation: Vec<Value> = names
        .iter()
        .map(|n| json!({ "input": n, "tokens": pseudonymise::normalise(n) }))
        .collect();
    let phonetic: Vec<Value> = [
        "muller", "gusev", "gussew", "iurii", "juri", "mohamed", "muhammad", "yusuf",
    ]
    .iter()
    .map(|t| json!({ "token": t, "codes": pseudonymise::phonetic(t) }))
    .collect();
    let identities = [
        (
            "García López",
            "Ana María",
            "1980-02-29",
            vec![],
            Side::Record,
        ),
        (
            "Гусев",
            "Юрий",
            "1978-03-21",
            vec![("Gusev".to_owned(), "Yuri".to_owned())],
            Side::Record,
        ),
        ("van der Berg", "", "1961-07", vec![], Side::Record),
        ("Mohammed", "", "1990-11-05", vec![], Side::Query),
        ("O'Brien", "Sean", "1955", vec![], Side::Query),
    ];
    let secret = unhex(SECRET_HEX);
    let mut epochs = Vec::new();
    for epoch in [1u32, 2] {
        let p = Pseudonymiser::from_secret_bytes(&secret, KeyEpoch(epoch));
        let cases: Vec<Value> = identities
            .iter()
            .map(|(family, given, dob, aliases, side)| {
                let identity = Identity::from_fields(family, given, dob, aliases).expect("valid");
                let keys: Vec<Value> = pseudonymise::derive_keys(&identity, *side)
                    .iter()
                    .map(|k| {
                        json!({
                            "kind": k.kind().name(),
                            "code": k.kind().code(),
                            "quality": k.kind().quality().name(),
                            "text": k.text(),
                            "digest": hex(&p.digest(k).0),
                        })
                    })
                    .collect();
                json!({
                    "family_name": family,
                    "given_names": given,
                    "date_of_birth": dob,
                    "aliases": aliases.iter().map(|(f, g)| format!("{f}/{g}")).collect::<Vec<_>>(),
                    "side": match side { Side::Record => "record", Side::Query => "query" },
                    "keys": keys,
                })
            })
            .collect();
        epochs.push(json!({ "epoch": epoch, "identities": cases }));
    }
    json!({
        "scheme": pseudonymise::SCHEME_VERSION,
        "secret_hex": SECRET_HEX,
        "hkdf_salt": String::from_utf8_lossy(pseudonymise::HKDF_SALT),
        "digest_bytes": pseudonymise::DIGEST_BYTES,
        "normalisation": normalisation,
        "phonetic": phonetic,
        "epochs": epochs,
    })
}

#[test]
fn test_vectors_match_byte_for_byte() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/match-keys-v1.vectors.json");
    let mut generated = serde_json::to_string_pretty(&vectors()).expect("json");
    generated.push('\n');
    if std::env::var_os("ADEP_WRITE_VECTORS").is_some() {
        std::fs::write(&path, &generated).expect("write vectors");
    }
    let stored =
        std::fs::read_to_string(&path).expect("docs/match-keys-v1.vectors.json is readable");
    assert!(
        stored == generated,
        "the scheme no longer reproduces docs/match-keys-v1.vectors.json; a change of keys is a new scheme version"
    );
}
