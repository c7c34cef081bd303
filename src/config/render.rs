//! `--check-config`'s output: the complete effective configuration as a TOML file that
//! `--check-config` takes again (and prints the same). Every key is shown with the value in use
//! (defaults included), in the order of the reference; what is unset is said in a comment
//! rather than shown as an empty table; secrets are never written.

use std::fmt::Write as _;

use super::Config;

/// Sections in the order they are printed; arrays of tables (`[[projects]]`, `[[groups]]`) last,
/// so that no bare key can land at the top of the file.
const SECTIONS: [&str; 13] = [
    "gitlab",
    "server",
    "poll",
    "metrics",
    "state",
    "labels",
    "shard",
    "limits",
    "discovery",
    "webhook",
    "failures",
    "projects",
    "groups",
];

/// What the caller knows beyond the configuration as written.
#[derive(Debug, Clone, Default)]
pub struct Effective {
    /// `shard.index` in use, and where it came from when it was not configured.
    pub shard_index: u32,
    pub shard_index_from: Option<String>,
}

impl Config {
    /// The effective configuration as TOML, secrets redacted (see the module documentation).
    pub fn to_redacted_toml(&self) -> String {
        self.render(&Effective {
            shard_index: self.shard.index.unwrap_or(0),
            shard_index_from: None,
        })
    }

    pub(super) fn render(&self, effective: &Effective) -> String {
        let mut table = match toml::Table::try_from(self) {
            Ok(t) => t,
            Err(e) => return format!("# cannot render: {e}\n"),
        };
        complete(&mut table, effective);
        let mut out = String::new();
        for name in SECTIONS {
            let Some(value) = table.remove(name) else {
                continue;
            };
            out.push_str(&section(name, value, self, effective));
        }
        // Whatever a later key adds and this list misses is still printed (last).
        for (name, value) in table {
            out.push_str(&section(&name, value, self, effective));
        }
        out.truncate(out.trim_end().len());
        out.push('\n');
        out
    }
}

/// Keys serde leaves out when unset or empty, filled in with the value in use.
fn complete(table: &mut toml::Table, effective: &Effective) {
    if let Some(toml::Value::Table(labels)) = table.get_mut("labels") {
        labels
            .entry("drop")
            .or_insert_with(|| toml::Value::Array(Vec::new()));
        labels
            .entry("job_rewrites")
            .or_insert_with(|| toml::Value::Array(Vec::new()));
    }
    if let Some(toml::Value::Table(shard)) = table.get_mut("shard") {
        shard.insert(
            "index".into(),
            toml::Value::Integer(i64::from(effective.shard_index)),
        );
    }
    if let Some(toml::Value::Table(gitlab)) = table.get_mut("gitlab") {
        // Never written, not even as a placeholder: a copy of this output fed back would use
        // the placeholder as the token. Said in a comment instead (see `section`).
        gitlab.remove("token");
    }
}

/// One section, with a blank line after it.
fn section(name: &str, value: toml::Value, cfg: &Config, effective: &Effective) -> String {
    let mut out = String::new();
    match name {
        "state" if cfg.state.dir.is_none() => {
            out.push_str("# [state] dir is unset: nothing persists across restarts (each start backfills poll.backfill)\n\n");
            return out;
        }
        "projects" | "groups" if value.as_array().is_some_and(Vec::is_empty) => {
            let _ = writeln!(out, "# no [[{name}]]\n");
            return out;
        }
        "shard" => {
            if let Some(from) = &effective.shard_index_from {
                let _ = writeln!(out, "# shard.index is not configured: {from}");
            }
        }
        "failures" => {
            let defaults = crate::failures::DEFAULT_RULES.len();
            if cfg.failures.default_rules {
                let _ = writeln!(
                    out,
                    "# failures.rules are tried first, then the {defaults} default rules (docs/failures.md)"
                );
            } else {
                out.push_str(
                    "# failures.default_rules = false: only failures.rules apply
",
                );
            }
        }
        "gitlab" if cfg.gitlab.token.is_none() && cfg.gitlab.token_file.is_none() => {
            out.push_str("# no token configured\n");
        }
        "gitlab" if cfg.gitlab.token.is_some() && cfg.gitlab.token_file.is_none() => {
            out.push_str("# gitlab.token is set (here or by GITLAB_TOKEN) and not shown: give it as GITLAB_TOKEN or gitlab.token_file\n");
        }
        _ => {}
    }
    let mut single = toml::Table::new();
    single.insert(name.to_string(), value);
    // Not `_pretty`: that writes every bucket bound on a line of its own.
    match toml::to_string(&single) {
        Ok(text) => out.push_str(&text),
        Err(e) => {
            let _ = writeln!(out, "# [{name}] cannot be rendered: {e}");
        }
    }
    if !out.ends_with("\n\n") {
        out.push('\n');
    }
    out
}
