//! The documentation is exercised, so that it cannot drift from the exporter:
//!
//! - every ```` ```toml ```` block of README.md and docs/*.md is run through the built binary's
//!   `--check-config` (only its exit status counts here, not its output);
//! - every relative link of the project's Markdown files leads to a file (and, with a `#anchor`
//!   into a Markdown file, to one of its headings);
//! - README keeps the newcomer's commands, and grafana/README.md names every API endpoint.
//!
//! # How a TOML block is checked
//!
//! An HTML comment on the line right above the fence (invisible on GitHub) says what a block is;
//! without one, the block must be a complete configuration:
//!
//! - *(none)*: checked as it is.
//! - `<!-- docs-test: merge -->`: a fragment (`[labels]`, `[[groups]]` …), merged over
//!   [`BASE`] (a GitLab URL and one project); the fragment's keys win.
//! - `<!-- docs-test: template … -->`: a fragment that belongs inside a section it does not name
//!   (a lone `peer_url = …`): the comment holds the whole configuration after `template`, with
//!   `{{block}}` where the block goes.
//! - `<!-- docs-test: invalid -->`: an example of a mistake: `--check-config` must refuse it
//!   with exit code 2.
//!
//! Every check runs with `GITLAB_TOKEN` and `GITLAB_WEBHOOK_SECRET` set, without any
//! `GITLAB_JOBS_EXPORTER__*` override or `HOSTNAME`; a `gitlab.token_file` or
//! `webhook.secret_file` is replaced by a temporary file holding a dummy secret (the paths in the
//! docs are those of a deployment: `/run/credentials/…`).

use std::path::{Path, PathBuf};
use std::process::Command;

const EXPORTER: &str = env!("CARGO_BIN_EXE_gitlab-jobs-exporter");

/// What a `merge` fragment is merged over.
const BASE: &str = r#"
[gitlab]
url = "https://gitlab.example.com"

[[projects]]
path = "group/project"
"#;

/// Exit code of a configuration error.
const CONFIG_ERROR: i32 = 2;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// README.md and docs/*.md: the files whose TOML blocks are checked.
fn documentation() -> Vec<PathBuf> {
    let mut files = vec![repo().join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .expect("docs/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    assert!(docs.len() >= 5, "docs/: {docs:?}");
    files.extend(docs);
    files
}

/// Every Markdown file of the project outside target/ and hidden folders.
fn markdown_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            if name.starts_with('.') || name == "target" {
                continue;
            }
            if path.is_dir() {
                walk(&path, out);
            } else if name.ends_with(".md") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&repo(), &mut out);
    out.sort();
    out
}

/// How a block is to be checked (see the module documentation).
#[derive(Debug, Clone, PartialEq)]
enum Mode {
    Complete,
    Merge,
    Template(String),
    Invalid,
}

/// A fenced code block.
#[derive(Debug)]
struct Block {
    /// `file:line` of the opening fence.
    place: String,
    lang: String,
    text: String,
    mode: Mode,
}

/// The fenced code blocks of a Markdown text, with the directive above each.
fn blocks(file: &Path, text: &str) -> Vec<Block> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let indent = line.len() - line.trim_start().len();
        let Some(lang) = line.trim_start().strip_prefix("```") else {
            i += 1;
            continue;
        };
        let start = i;
        let mut body = Vec::new();
        i += 1;
        while i < lines.len() && lines[i].trim() != "```" {
            // Lines of a block inside a list item carry the fence's indentation.
            let l = lines[i];
            body.push(
                l.get(indent..)
                    .filter(|_| l.len() >= indent)
                    .unwrap_or(l.trim_start()),
            );
            i += 1;
        }
        assert!(
            i < lines.len(),
            "{}:{}: unclosed fence",
            file.display(),
            start + 1
        );
        i += 1;
        out.push(Block {
            place: format!("{}:{}", file.display(), start + 1),
            lang: lang.trim().to_string(),
            text: body.join("\n") + "\n",
            mode: directive(&lines[..start]),
        });
    }
    out
}

/// The `docs-test` directive ending on the last of `above`, if any.
fn directive(above: &[&str]) -> Mode {
    let Some(last) = above.last() else {
        return Mode::Complete;
    };
    if !last.trim_end().ends_with("-->") {
        return Mode::Complete;
    }
    let Some(open) = above.iter().rposition(|l| l.contains("<!--")) else {
        return Mode::Complete;
    };
    let comment = above[open..].join("\n");
    let Some(rest) = comment.split_once("<!-- docs-test:").map(|(_, r)| r) else {
        return Mode::Complete;
    };
    let rest = rest.trim_end().trim_end_matches("-->");
    let (word, tail) = rest
        .trim_start()
        .split_once(char::is_whitespace)
        .unwrap_or((rest.trim(), ""));
    match word {
        "merge" => Mode::Merge,
        "invalid" => Mode::Invalid,
        "template" => {
            assert!(
                tail.contains("{{block}}"),
                "a template without {{{{block}}}}: {comment}"
            );
            Mode::Template(tail.to_string())
        }
        other => panic!("unknown docs-test directive {other:?}: {comment}"),
    }
}

/// Merges `over` into `base`, tables key by key, anything else replaced.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// The configuration a block stands for, as it is checked; `Err` if it is no TOML.
fn configuration(block: &Block, secrets: &Path) -> Result<String, String> {
    let text = match &block.mode {
        Mode::Complete | Mode::Invalid => block.text.clone(),
        Mode::Template(t) => t.replace("{{block}}", block.text.trim_end()),
        Mode::Merge => {
            let mut base: toml::Table = BASE.parse().expect("BASE");
            let fragment: toml::Table = block.text.parse().map_err(|e| format!("{e}"))?;
            merge(&mut base, fragment);
            toml::to_string(&base).expect("serialise")
        }
    };
    let mut table: toml::Table = match text.parse() {
        Ok(t) => t,
        // A syntax error shown on purpose is checked as written.
        Err(e) if block.mode == Mode::Invalid => return Ok(format!("{text}\n# {e}")),
        Err(e) => return Err(format!("not TOML: {e}")),
    };
    for (section, key, name) in [
        ("gitlab", "token_file", "token"),
        ("webhook", "secret_file", "secret"),
    ] {
        if let Some(toml::Value::Table(s)) = table.get_mut(section)
            && s.contains_key(key)
        {
            let file = secrets.join(name);
            std::fs::write(&file, format!("docs-test-{name}\n")).expect("write");
            s.insert(key.into(), toml::Value::String(file.display().to_string()));
        }
    }
    Ok(toml::to_string(&table).expect("serialise"))
}

/// Runs `--check-config` on the block's configuration: `Ok` with a description when the exit
/// status is what the block's mode expects, `Err` with the exporter's output otherwise.
fn check_block(block: &Block) -> Result<(), String> {
    let tmp = tempfile::tempdir().expect("tempdir");
    let config = configuration(block, tmp.path()).map_err(|e| format!("{}: {e}", block.place))?;
    let path = tmp.path().join("config.toml");
    std::fs::write(&path, &config).expect("write");
    let mut cmd = Command::new(EXPORTER);
    cmd.arg("--config")
        .arg(&path)
        .arg("--check-config")
        .env("GITLAB_TOKEN", "glpat-docs-test")
        .env("GITLAB_WEBHOOK_SECRET", "docs-test-webhook-secret")
        .env_remove("HOSTNAME");
    for (k, _) in std::env::vars() {
        if k.starts_with("GITLAB_JOBS_EXPORTER__") {
            cmd.env_remove(k);
        }
    }
    let out = cmd.output().expect("run the exporter");
    let expected = match block.mode {
        Mode::Invalid => Some(CONFIG_ERROR),
        _ => Some(0),
    };
    if out.status.code() == expected {
        return Ok(());
    }
    Err(format!(
        "{}: --check-config exited {:?}, expected {expected:?} ({:?})\nconfiguration:\n{config}\noutput:\n{}{}",
        block.place,
        out.status.code(),
        block.mode,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    ))
}

#[test]
fn every_toml_block_in_the_docs_passes_check_config() {
    let mut checked = Vec::new();
    let mut failures = Vec::new();
    for file in documentation() {
        for block in blocks(&file, &read(&file)) {
            if block.lang != "toml" {
                continue;
            }
            if let Err(e) = check_block(&block) {
                failures.push(e);
            }
            checked.push(block.place);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    // README's five steps, discovery and labels in configuration.md, webhooks.md's two.
    assert!(checked.len() >= 5, "{checked:?}");
    assert!(
        checked.iter().any(|p| p.contains("README.md")),
        "{checked:?}"
    );
}

/// The convention's teeth: a block the exporter refuses fails the check, whatever the mode, and
/// a block marked `invalid` that is valid fails too.
#[test]
fn an_invalid_block_fails_the_check() {
    let file = Path::new("example.md");
    let md = "\
```toml
[gitlab]
url = \"https://gitlab.example.com\"
[poll]
interval = 30
[[projects]]
path = \"a/b\"
```

<!-- docs-test: merge -->
```toml
[labels]
job = \"sometimes\"
```

<!-- docs-test: template
[gitlab]
url = \"https://gitlab.example.com\"
[[projects]]
id = 1
[webhook]
enabled = true
{{block}}
-->
```toml
peer_url = \"http://no-shard-placeholder/webhook\"
```

<!-- docs-test: invalid -->
```toml
[gitlab]
url = \"https://gitlab.example.com\"
[[projects]]
path = \"a/b\"
```

<!-- docs-test: invalid -->
```toml
[poll]
interval = 30
```

<!-- docs-test: merge -->
```toml
[webhook]
enabled = true
secret_file = \"/run/credentials/x/webhook-secret\"
```
";
    let blocks = blocks(file, md);
    let modes: Vec<&Mode> = blocks.iter().map(|b| &b.mode).collect();
    assert!(
        matches!(
            modes[..],
            [
                Mode::Complete,
                Mode::Merge,
                Mode::Template(_),
                Mode::Invalid,
                Mode::Invalid,
                Mode::Merge
            ]
        ),
        "{modes:?}"
    );
    for block in &blocks[..4] {
        assert!(check_block(block).is_err(), "{} passed", block.place);
    }
    // A mistake shown as one, and a fragment with a deployment's secret path, pass.
    for block in &blocks[4..] {
        check_block(block).unwrap_or_else(|e| panic!("{e}"));
    }
}

/// GitHub's anchor for a heading: lowercase, punctuation dropped, spaces to hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a Markdown file's headings (outside code blocks).
fn anchors(text: &str) -> Vec<String> {
    let mut fenced = false;
    let mut out = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced && line.starts_with('#') {
            out.push(slug(line.trim_start_matches('#')));
        }
    }
    out
}

/// The targets of the inline links `[text](target)` of a Markdown text, outside code blocks and
/// code spans, with their line numbers.
fn links(text: &str) -> Vec<(usize, String)> {
    let mut fenced = false;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        // Drop code spans: `[a](b)` inside backticks is no link.
        let plain: String = line.split('`').step_by(2).collect::<Vec<_>>().join(" ");
        let mut rest = plain.as_str();
        while let Some(at) = rest.find("](") {
            let tail = &rest[at + 2..];
            let Some(end) = tail.find(')') else { break };
            out.push((n + 1, tail[..end].to_string()));
            rest = &tail[end..];
        }
    }
    out
}

#[test]
fn every_relative_link_resolves() {
    let files = markdown_files();
    for must in [
        "README.md",
        "docs/operations.md",
        "deploy/README.md",
        "grafana/README.md",
    ] {
        assert!(
            files.contains(&repo().join(must)),
            "{must} not walked: {files:?}"
        );
    }
    let mut broken = Vec::new();
    let mut followed = 0;
    for file in &files {
        let text = read(file);
        for (line, target) in links(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            followed += 1;
            let (path, anchor) = target.split_once('#').unwrap_or((&target, ""));
            let resolved = if path.is_empty() {
                file.clone()
            } else {
                file.parent().expect("parent").join(path)
            };
            let place = format!("{}:{line}: ({target})", file.display());
            if !resolved.exists() {
                broken.push(format!("{place}: no {}", resolved.display()));
                continue;
            }
            if !anchor.is_empty() && resolved.extension().is_some_and(|e| e == "md") {
                let known = anchors(&read(&resolved));
                if !known.iter().any(|a| a == anchor) {
                    broken.push(format!("{place}: no heading #{anchor} (has {known:?})"));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
    assert!(followed >= 50, "only {followed} relative links found");
}

#[test]
fn links_checker_catches_a_missing_file_and_anchor() {
    let text = "See [a](docs/nowhere.md), `[b](not/a/link.md)` and [c](#missing).\n## Here\n";
    let found = links(text);
    assert_eq!(
        found,
        [
            (1, "docs/nowhere.md".to_string()),
            (1, "#missing".to_string())
        ]
    );
    assert_eq!(anchors(text), ["here"]);
    assert_eq!(
        slug("Checking a setup: `--check-config` and `--check-gitlab`"),
        "checking-a-setup---check-config-and---check-gitlab"
    );
}

/// README stays the newcomer's page: the two set-up commands verbatim in the first shell block,
/// the doctor in the five steps, links to the references, and short.
#[test]
fn readme_keeps_the_newcomers_commands_and_links() {
    let readme = read(&repo().join("README.md"));
    let first_sh = blocks(Path::new("README.md"), &readme)
        .into_iter()
        .find(|b| b.lang == "sh")
        .expect("a sh block");
    let commands: Vec<&str> = first_sh
        .text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(commands, ["cargo run -- --demo", "scripts/test.sh"]);
    assert!(
        readme.contains("gitlab-jobs-exporter --config config.toml --check-gitlab"),
        "README's five steps lack --check-gitlab"
    );
    for doc in [
        "docs/configuration.md",
        "docs/metrics.md",
        "docs/operations.md",
        "docs/webhooks.md",
        "docs/check-gitlab.md",
        "docs/status-page.md",
        "deploy/README.md",
    ] {
        assert!(
            readme.contains(&format!("]({doc}")),
            "README does not link {doc}"
        );
    }
    assert!(readme.len() < 10_000, "README is {} bytes", readme.len());
    let ops = read(&repo().join("docs/operations.md"));
    for needle in [
        "RUST_LOG=gitlab_jobs_exporter=debug",
        "`/status.json`",
        "--check-gitlab",
    ] {
        assert!(ops.contains(needle), "docs/operations.md lacks {needle}");
    }
}

/// The `endpoint` label values of `gitlab_jobs_exporter_api_requests_total`: each is in the
/// client's code, and named by the metrics reference and the dashboard's README.
#[test]
fn every_api_endpoint_is_documented() {
    const ENDPOINTS: [&str; 6] = [
        "project",
        "jobs",
        "job",
        "pipeline_jobs",
        "group_projects",
        "projects",
    ];
    let client = read(&repo().join("src/gitlab/mod.rs"));
    for doc in ["docs/metrics.md", "grafana/README.md"] {
        let text = read(&repo().join(doc));
        for e in ENDPOINTS {
            assert!(
                client.contains(&format!("\"{e}\"")),
                "{e} not in src/gitlab/mod.rs"
            );
            assert!(
                text.contains(&format!("`{e}`")),
                "{doc} does not name endpoint {e}"
            );
        }
    }
}

/// deploy/README.md's Secret commands create what the Helm chart reads (the keys of
/// `existingSecretKey`'s defaults, the names the install command passes), and the container
/// section builds from the Dockerfile that exists and pushes what it built.
#[test]
fn deploy_readme_commands_match_the_chart_and_the_dockerfile() {
    let readme = read(&repo().join("deploy/README.md"));
    let values = read(&repo().join("deploy/helm/gitlab-jobs-exporter/values.yaml"));
    let helm = readme.split("\n## Helm\n").nth(1).expect("## Helm");
    // values.yaml: gitlab.existingSecretKey, then webhook.existingSecretKey.
    let keys: Vec<&str> = values
        .lines()
        .filter_map(|l| l.trim().strip_prefix("existingSecretKey: "))
        .collect();
    assert_eq!(keys, ["token", "secret"], "values.yaml changed");
    for (name, key, value) in [
        (
            "gitlab-jobs-exporter-token",
            keys[0],
            "gitlab.existingSecret",
        ),
        (
            "gitlab-jobs-exporter-webhook",
            keys[1],
            "webhook.existingSecret",
        ),
    ] {
        let create = format!("create secret generic {name} --from-file={key}=");
        assert!(helm.contains(&create), "## Helm lacks `{create}`");
        let set = format!("{value}={name}");
        assert!(helm.contains(&set), "## Helm lacks `{set}`");
    }
    let container = readme
        .split("\n## Container image\n")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("## Container image");
    assert!(container.contains("No image is published"), "{container}");
    let image = "registry.example.com/gitlab-jobs-exporter:0.1.0";
    for tool in ["docker", "podman"] {
        let build = format!("{tool} build -f deploy/container/Dockerfile -t");
        assert!(container.contains(&build), "no `{build}`");
        assert!(
            container.contains(&format!("{tool} push")),
            "no `{tool} push`"
        );
    }
    assert!(container.contains(&format!("docker push {image}")));
    assert!(repo().join("deploy/container/Dockerfile").is_file());
}
