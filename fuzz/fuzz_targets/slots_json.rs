//! cdc-slot-tool's slot inventory (slots.json).
#![no_main]

use libfuzzer_sys::fuzz_target;

const SHOWN: &str = "fuzz/slots.json";

fuzz_target!(|data: &[u8]| {
    if let Err(e) = cdc_slot_tool::Inventory::parse(data, SHOWN) {
        assert!(format!("{e:#}").contains(SHOWN));
    }
});
