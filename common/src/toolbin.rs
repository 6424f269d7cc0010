//! Finding the other pipeline-backup tools: they install side by side, so the one next to
//! the running program comes first, then PATH.

use std::path::PathBuf;

/// `name` next to the running program, else found on PATH (an absolute path either way).
pub fn find(name: &str) -> Option<PathBuf> {
    sibling(name).or_else(|| which::which(name).ok())
}

/// [`find`], else the bare name: running it then fails with "not found" naming the program.
pub fn program(name: &str) -> PathBuf {
    find(name).unwrap_or_else(|| PathBuf::from(name))
}

/// `name` in the running program's directory, when it is a file there.
fn sibling(name: &str) -> Option<PathBuf> {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(name)))
        .filter(|path| path.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_program_next_to_this_one_comes_first() {
        // The test binary's own directory holds the test binary itself.
        let exe = std::env::current_exe().unwrap();
        let name = exe.file_name().unwrap().to_str().unwrap();
        assert_eq!(find(name), Some(exe.clone()));
        assert_eq!(program(name), exe);
    }

    #[test]
    fn then_path_then_the_bare_name() {
        let sh = find("sh").expect("sh is on PATH");
        assert!(sh.is_absolute() && sh.ends_with("sh"), "{}", sh.display());
        assert_eq!(find("no-such-pipeline-backup-tool"), None);
        assert_eq!(
            program("no-such-pipeline-backup-tool"),
            PathBuf::from("no-such-pipeline-backup-tool")
        );
    }
}
