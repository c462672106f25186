//! Live config reload: the config file is re-read when its content changes (polled every
//! second by `app`) or on SIGHUP, resolved exactly as at start (defaults < file < `OTEL_*`
//! environment < flags) and validated; a valid change to a live section is put in force, an
//! invalid one is refused and the previous config stays.
//!
//! Why poll the content rather than watch for events: a Kubernetes ConfigMap volume updates by
//! swapping the `..data` symlink in the mount directory, which a watch on the file itself never
//! sees and a watch on the directory sees as a burst of events on names that are not the
//! file's. Reading a small file once a second and comparing a hash sees every kind of update
//! (symlink swap, in-place write, editor rename), costs microseconds, and needs no crate.
//!
//! Live sections ([`LIVE_SECTIONS`]): `selection` only. Every other section sizes kernel maps,
//! attaches probes, opens sockets or starts the exporter at start-up; a change to one of them is
//! logged as ignored (with its name) and takes effect at the next restart.

use std::hash::{Hash, Hasher};
use std::io::Read;
use std::path::PathBuf;

use crate::cli::RunArgs;
use crate::config::{Config, ConfigError};

/// Sections applied without a restart.
pub const LIVE_SECTIONS: &[&str] = &["selection"];
/// A config file larger than this is refused (a ConfigMap holds at most 1 MiB).
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// The top-level sections of `a` and `b` that differ.
pub fn changed_sections(a: &Config, b: &Config) -> Vec<&'static str> {
    // Debug output covers every field of every section (all derive Debug), so comparing it
    // cannot miss a field added later, unlike a hand-written comparison.
    let sections = |c: &Config| -> [(&'static str, String); 11] {
        [
            ("capture", format!("{:?}", c.capture)),
            ("processes", format!("{:?}", c.processes)),
            ("probes", format!("{:?}", c.probes)),
            ("connections", format!("{:?}", c.connections)),
            ("redaction", format!("{:?}", c.redaction)),
            ("sampling", format!("{:?}", c.sampling)),
            ("sdk", format!("{:?}", c.sdk)),
            ("export", format!("{:?}", c.export)),
            ("telemetry", format!("{:?}", c.telemetry)),
            ("kubernetes", format!("{:?}", c.kubernetes)),
            ("selection", format!("{:?}", c.selection)),
        ]
    };
    sections(a)
        .into_iter()
        .zip(sections(b))
        .filter(|((_, x), (_, y))| x != y)
        .map(|((n, _), _)| n)
        .collect()
}

/// What one look at the config file gave.
#[derive(Debug)]
pub enum Outcome {
    /// The content did not change since the last look.
    Unchanged,
    /// A valid config: `live` sections changed are to be put in force (the new config is
    /// [`Reloader::current`] now); `ignored` changed too but need a restart.
    Applied {
        live: Vec<&'static str>,
        ignored: Vec<&'static str>,
    },
    /// Unreadable or invalid: the previous config stays.
    Refused(ConfigError),
}

/// Re-reads the config file as the command line named it.
pub struct Reloader {
    args: RunArgs,
    current: Config,
    last_hash: Option<u64>,
}

impl Reloader {
    /// `current` is the config in force, resolved from `args` at start.
    pub fn new(args: RunArgs, current: Config) -> Self {
        let mut r = Self {
            args,
            current,
            last_hash: None,
        };
        r.last_hash = r.read().ok().map(|t| hash(&t));
        r
    }

    pub fn path(&self) -> Option<&PathBuf> {
        self.args.config.as_ref()
    }

    pub fn current(&self) -> &Config {
        &self.current
    }

    fn read(&self) -> Result<String, ConfigError> {
        let Some(p) = &self.args.config else {
            return Ok(String::new());
        };
        let err = |source| ConfigError::Read {
            path: p.display().to_string(),
            source,
        };
        let mut text = String::new();
        std::fs::File::open(p)
            .and_then(|f| f.take(MAX_FILE_BYTES + 1).read_to_string(&mut text))
            .map_err(err)?;
        if text.len() as u64 > MAX_FILE_BYTES {
            return Err(ConfigError::Invalid(format!(
                "{}: larger than {MAX_FILE_BYTES} bytes",
                p.display()
            )));
        }
        Ok(text)
    }

    /// Looks at the file: re-resolves when its content changed, or always when `force` (a
    /// SIGHUP). `env` is the process environment (as at start).
    pub fn check(&mut self, force: bool, env: impl Fn(&str) -> Option<String>) -> Outcome {
        if self.args.config.is_none() {
            return Outcome::Unchanged;
        }
        let text = match self.read() {
            Ok(t) => t,
            Err(e) => {
                // A ConfigMap swap never leaves the path missing; an editor's save might for
                // an instant. Report it once per distinct state, not every second.
                if self.last_hash.replace(0) == Some(0) && !force {
                    return Outcome::Unchanged;
                }
                return Outcome::Refused(e);
            }
        };
        let h = hash(&text);
        if !force && self.last_hash == Some(h) {
            return Outcome::Unchanged;
        }
        self.last_hash = Some(h);
        let new = Config::resolve_text(&text, &self.args, env);
        match new {
            Ok(c) => {
                let changed = changed_sections(&self.current, &c);
                let (live, ignored) = changed.into_iter().partition(|s| LIVE_SECTIONS.contains(s));
                // Only live sections take effect; the rest stays as it was at start, so the
                // next comparison reports them again until the agent restarts.
                self.current.selection = c.selection;
                Outcome::Applied { live, ignored }
            }
            Err(e) => Outcome::Refused(e),
        }
    }
}

fn hash(text: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests;
