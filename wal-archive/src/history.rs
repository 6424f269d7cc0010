//! Timeline history files (`00000002.history`) as the archive holds them: where the timeline
//! a file describes branched off its parent.

use common::lsn::Lsn;

/// Largest history file read. PostgreSQL writes one short line per timeline switch, so a
/// bigger file is damage; the cap bounds what a decompression bomb can make `verify` hold.
pub const MAX_HISTORY_BYTES: u64 = 16 << 20;

/// The switch point that leads to the file's timeline: the LSN of its last entry line
/// (`<parent tli> <tab> <switch LSN> <tab> <reason>`); `None` when it lists no entry.
/// `shown` names the file in errors.
pub fn switch_point(text: &[u8], shown: &str) -> Result<Option<Lsn>, String> {
    let text = std::str::from_utf8(text)
        .map_err(|e| format!("{shown} is not a timeline history file (not text: {e})"))?;
    let Some((n, line)) = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.starts_with('#'))
        .last()
    else {
        return Ok(None);
    };
    let mut fields = line.split_whitespace();
    let parent = fields.next().and_then(|t| t.parse::<u32>().ok());
    let lsn = fields.next().and_then(|l| l.parse::<Lsn>().ok());
    match (parent, lsn) {
        (Some(_), Some(lsn)) => Ok(Some(lsn)),
        _ => Err(format!(
            "{shown} is not a timeline history file (line {} is not '<timeline> <LSN> <reason>')",
            n + 1
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_entry_gives_the_switch_point() {
        let text =
            b"1\t0/3000158\tno recovery target specified\n\n2\t0/5000000\tat restore point \"x\"\n";
        assert_eq!(
            switch_point(text, "wal/00000003.history"),
            Ok(Some("0/5000000".parse().unwrap()))
        );
        assert_eq!(switch_point(b"# nothing\n\n", "h"), Ok(None));
        for bad in [&b"1\tnot-an-lsn\treason\n"[..], b"\xff\xfe", b"x 0/1 y"] {
            let err = switch_point(bad, "wal/00000002.history").unwrap_err();
            assert!(err.contains("wal/00000002.history"), "{err}");
        }
    }
}
