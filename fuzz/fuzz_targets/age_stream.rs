//! A whole age file decrypted, structure-aware: the fuzzer picks a plaintext and the damage
//! (flips, a cut) done to its encryption to a key this process holds.
#![no_main]

use std::io::{Read, Write};
use std::sync::OnceLock;

use age::secrecy::ExposeSecret;
use common::encryption::{Identities, Recipients};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

const SHOWN: &str = "fuzz/file.age";

#[derive(Debug, Arbitrary)]
struct Case {
    plaintext: Vec<u8>,
    flips: Vec<(u32, u8)>,
    cut: Option<u32>,
    raw: bool,
    bytes: Vec<u8>,
}

fn keys() -> &'static (Recipients, Identities) {
    static KEYS: OnceLock<(Recipients, Identities)> = OnceLock::new();
    KEYS.get_or_init(|| {
        let key = age::x25519::Identity::generate();
        let path = std::env::temp_dir().join(format!("fuzz-age-{}.txt", std::process::id()));
        std::fs::write(&path, format!("{}\n", key.to_string().expose_secret())).unwrap();
        let identities = Identities::from_file(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        (
            Recipients::parse(&key.to_public().to_string()).unwrap(),
            identities,
        )
    })
}

fuzz_target!(|case: Case| {
    let (recipients, identities) = keys();
    let mut stored = if case.raw {
        case.bytes
    } else {
        let mut w = recipients.encrypt(Vec::new()).unwrap();
        w.write_all(&case.plaintext).unwrap();
        w.finish().unwrap()
    };
    for (at, mask) in case.flips {
        if !stored.is_empty() {
            let i = at as usize % stored.len();
            stored[i] ^= mask;
        }
    }
    if let Some(cut) = case.cut {
        stored.truncate(cut as usize % (stored.len() + 1));
    }
    let mut out = Vec::new();
    if let Err(e) = identities
        .decrypt(&stored[..], SHOWN)
        .and_then(|mut r| r.read_to_end(&mut out))
    {
        assert!(e.to_string().contains(SHOWN), "{e}");
    }
});
