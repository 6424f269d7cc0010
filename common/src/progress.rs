//! Progress bars on stderr, only when it is a terminal and not silenced.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::cli::GlobalArgs;
use crate::env;

/// Whether bars should be drawn at all.
pub fn enabled(global: &GlobalArgs) -> bool {
    !global.quiet && std::io::stderr().is_terminal() && !env::is_set(env::BACKUP_NO_PROGRESS)
}

/// A byte-counting bar; `total` None draws a spinner with a byte counter.
pub fn bytes(global: &GlobalArgs, total: Option<u64>, message: &str) -> ProgressBar {
    let bar = match total {
        Some(total) => ProgressBar::new(total).with_style(
            ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {msg} {bytes} {bytes_per_sec}")
                .expect("valid template"),
        ),
    };
    finish_setup(bar, global, message)
}

/// A counting bar for items (records, tables).
pub fn items(global: &GlobalArgs, total: Option<u64>, message: &str, unit: &str) -> ProgressBar {
    let template = match total {
        Some(_) => format!("{{msg}} [{{bar:30}}] {{pos}}/{{len}} {unit} {{per_sec}} eta {{eta}}"),
        None => format!("{{spinner}} {{msg}} {{pos}} {unit} {{per_sec}}"),
    };
    let bar = match total {
        Some(total) => ProgressBar::new(total),
        None => ProgressBar::new_spinner(),
    }
    .with_style(
        ProgressStyle::with_template(&template)
            .expect("valid template")
            .progress_chars("=> "),
    );
    finish_setup(bar, global, message)
}

fn finish_setup(bar: ProgressBar, global: &GlobalArgs, message: &str) -> ProgressBar {
    if !enabled(global) {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar.set_message(message.to_string());
    bar
}
