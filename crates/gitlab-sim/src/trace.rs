//! Job logs, as `GET /projects/:id/jobs/:job_id/trace` serves them: generated from
//! `(seed, job id)` alone, realistic (the runner's preamble, ANSI colours, GitLab's section
//! markers, `\r` progress bars, noise) and streamed in chunks, so a log of several MB is never
//! held in memory.
//!
//! A log is laid out as `head | noise | [far line | noise] | tail`. The head and tail are a few
//! KB and made whole; the noise is written chunk by chunk from its own seed and has an exact
//! length, so the position of every class line is known without writing the log, and the
//! ground truth can say what a classifier reading the last `tail_bytes` finds.
//!
//! A failed job's tail carries the line(s) of one failure class (or none: `other`), sometimes
//! after a lower-priority class's line (the rule order decides); a job that never started has
//! an empty log, as GitLab's `build.trace.raw || ''` gives.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;

use super::render::{mix, sha};
use super::world::{JobPlan, Ms};

/// The failure classes of issue 14, in rule order (the first that matches wins).
pub const FAILURE_CLASSES: [&str; 9] = [
    "oom",
    "disk_full",
    "registry_rate_limit",
    "image_pull",
    "network",
    "timeout",
    "dependency",
    "compile",
    "test_failure",
];
/// No class line in the tail.
pub const CLASS_OTHER: &str = "other";
/// The log could not be read (empty, 403, 404, a standing error).
pub const CLASS_UNAVAILABLE: &str = "unavailable";
/// The log is longer than `max_log_bytes`.
pub const CLASS_LOG_TOO_LARGE: &str = "log_too_large";

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
/// The noise is written in chunks of about this size.
pub(crate) const CHUNK: usize = 64 * 1024;

/// How big generated logs are and how often they carry the harder cases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogProfile {
    /// Ordinary logs are log-uniform in `min_bytes..typical_max_bytes`.
    pub min_bytes: u64,
    pub typical_max_bytes: u64,
    /// Per mille of logs that are log-uniform in `typical_max_bytes..large_max_bytes` instead.
    pub large_permille: u32,
    pub large_max_bytes: u64,
    /// Per mille of logs exactly `huge_bytes` long (above `max_log_bytes` when set so).
    pub huge_permille: u32,
    pub huge_bytes: u64,
    /// Per mille of failed jobs whose tail also carries a lower-priority class's line, earlier.
    pub decoy_permille: u32,
    /// Per mille of failed jobs with another class's line `far_distance` bytes or more before
    /// the end of the log, where a tail of that size does not reach.
    pub far_permille: u32,
    pub far_distance: u64,
}

impl Default for LogProfile {
    fn default() -> Self {
        Self {
            min_bytes: KIB,
            typical_max_bytes: 256 * KIB,
            large_permille: 80,
            large_max_bytes: 6 * MIB,
            huge_permille: 0,
            huge_bytes: 40 * MIB,
            decoy_permille: 150,
            far_permille: 50,
            far_distance: 96 * KIB,
        }
    }
}

/// What the exporter reads of a log, for the ground truth: the last `tail_bytes`, giving up
/// (class `log_too_large`) on a log longer than `max_log_bytes`. The exporter's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLimits {
    pub tail_bytes: u64,
    pub max_log_bytes: u64,
}

impl Default for LogLimits {
    fn default() -> Self {
        Self {
            tail_bytes: 64 * KIB,
            max_log_bytes: 32 * MIB,
        }
    }
}

/// Changes to one job's generated log (each `None` keeps the generated choice).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOverride {
    /// The log's size in bytes (grown to hold the head and tail when smaller).
    pub size: Option<u64>,
    /// The class whose line ends the tail: one of [`FAILURE_CLASSES`], or `other` for none.
    pub class: Option<String>,
    /// A lower-priority class's line earlier in the tail (`other`: none).
    pub decoy: Option<String>,
    /// A class line `far_distance` or more before the end (`other`: none).
    pub far: Option<String>,
    /// An erased log: empty body.
    pub erased: bool,
}

/// Everything about logs a world holds (cloned with it, so requests see one snapshot).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogSettings {
    pub seed: u64,
    pub profile: LogProfile,
    pub limits: LogLimits,
    pub overrides: BTreeMap<u64, LogOverride>,
    /// Projects whose token may not read logs: 403 on every trace.
    pub denied: BTreeSet<u64>,
    /// Jobs whose trace request always fails this way.
    pub standing: BTreeMap<u64, super::trace_api::TraceFault>,
}

/// Maps a class name to `&'static str`, `None` for `other` or an unknown name.
pub fn class_name(name: &str) -> Option<&'static str> {
    FAILURE_CLASSES.iter().copied().find(|c| *c == name)
}

fn priority(class: &str) -> usize {
    FAILURE_CLASSES
        .iter()
        .position(|c| *c == class)
        .unwrap_or(usize::MAX)
}

fn pick<T: Copy>(rng: &mut fastrand::Rng, table: &[(T, u32)]) -> T {
    let total: u32 = table.iter().map(|e| e.1).sum();
    let mut roll = rng.u32(0..total.max(1));
    for &(item, weight) in table {
        if roll < weight {
            return item;
        }
        roll -= weight;
    }
    table[table.len() - 1].0
}

fn log_uniform(rng: &mut fastrand::Rng, lo: u64, hi: u64) -> u64 {
    let (lo, hi) = ((lo.max(1) as f64).ln(), (hi.max(lo + 1) as f64).ln());
    (lo + rng.f64() * (hi - lo)).exp() as u64
}

const GENERAL: [(Option<&str>, u32); 10] = [
    (Some("oom"), 10),
    (Some("disk_full"), 6),
    (Some("registry_rate_limit"), 4),
    (Some("image_pull"), 5),
    (Some("network"), 10),
    (Some("dependency"), 10),
    (Some("compile"), 15),
    (Some("test_failure"), 30),
    (None, 15),
    (Some("timeout"), 0),
];
const SYSTEM: [(Option<&str>, u32); 6] = [
    (Some("image_pull"), 20),
    (Some("registry_rate_limit"), 15),
    (Some("network"), 25),
    (Some("disk_full"), 20),
    (Some("oom"), 10),
    (None, 10),
];

/// One class line (or lines) placed in a log, and how far its start is from the log's end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlacedLine {
    pub class: &'static str,
    pub from_end: u64,
}

/// A job's log, planned: sizes and class lines, without the noise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogPlan {
    pub job_id: u64,
    /// The body's length in bytes.
    pub size: u64,
    /// The class lines in the log, the tail's last.
    pub lines: Vec<PlacedLine>,
    head: Vec<u8>,
    far_line: Vec<u8>,
    tail: Vec<u8>,
    noise_before: u64,
    noise_after: u64,
    noise_seed: u64,
}

impl LogPlan {
    /// The class a classifier reading what `limits` allow finds (`None`: an empty log).
    pub fn class(&self, limits: LogLimits) -> &'static str {
        if self.size == 0 {
            return CLASS_UNAVAILABLE;
        }
        if self.size > limits.max_log_bytes {
            return CLASS_LOG_TOO_LARGE;
        }
        (self.lines.iter())
            .filter(|l| l.from_end <= limits.tail_bytes)
            .min_by_key(|l| priority(l.class))
            .map_or(CLASS_OTHER, |l| l.class)
    }

    /// The parts of the body in order, for [`super::trace_api::LogBody`].
    pub(crate) fn parts(&self) -> Vec<Part> {
        if self.size == 0 {
            return Vec::new();
        }
        let mut parts = vec![
            Part::Bytes(self.head.clone()),
            Part::Noise(Noise::new(self.noise_seed, self.noise_before)),
        ];
        if !self.far_line.is_empty() {
            parts.push(Part::Bytes(self.far_line.clone()));
            parts.push(Part::Noise(Noise::new(!self.noise_seed, self.noise_after)));
        }
        parts.push(Part::Bytes(self.tail.clone()));
        parts
    }

    /// The whole log in memory (tests and tools only: a log may be many MB).
    pub fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(usize::try_from(self.size).unwrap_or(0));
        for part in self.parts() {
            match part {
                Part::Bytes(b) => out.extend_from_slice(&b),
                Part::Noise(mut n) => {
                    while let Some(chunk) = n.next_chunk() {
                        out.extend_from_slice(&chunk);
                    }
                }
            }
        }
        out
    }
}

/// What a job's log shows, drawn from its seed before any text is written.
struct Choice {
    size: u64,
    class: Option<&'static str>,
    decoy: Option<&'static str>,
    far: Option<&'static str>,
    variant: u64,
}

fn choose(s: &LogSettings, job: &JobPlan, failed: bool, rng: &mut fastrand::Rng) -> Choice {
    let p = &s.profile;
    let roll = rng.u32(0..1000);
    let size = if roll < p.huge_permille {
        p.huge_bytes
    } else if roll < p.huge_permille + p.large_permille {
        log_uniform(rng, p.typical_max_bytes, p.large_max_bytes)
    } else {
        log_uniform(rng, p.min_bytes, p.typical_max_bytes)
    };
    let reason = job.failure_reason.as_deref().unwrap_or("unknown_failure");
    let class = match reason {
        _ if !failed => None,
        "job_execution_timeout" => Some("timeout"),
        "runner_system_failure" => pick(rng, &SYSTEM),
        _ => pick(rng, &GENERAL),
    };
    // A lower-priority class whose line can sit in a script's output (not `timeout`).
    let lower: Vec<&str> = (FAILURE_CLASSES.iter().copied())
        .filter(|c| class.is_some_and(|k| priority(c) > priority(k)) && *c != "timeout")
        .collect();
    let decoy = (rng.u32(0..1000) < p.decoy_permille && !lower.is_empty())
        .then(|| lower[rng.usize(0..lower.len())]);
    let far_roll = rng.u32(0..1000);
    let far_pick = FAILURE_CLASSES[rng.usize(0..5)];
    let far = (failed && far_roll < p.far_permille).then_some(far_pick);
    Choice {
        size,
        class,
        decoy,
        far,
        variant: rng.u64(..),
    }
}

impl LogSettings {
    /// The plan of `job`'s log (`project` is its path), as the trace endpoint serves it.
    pub fn plan(&self, job: &JobPlan, project: &str) -> LogPlan {
        let seed = mix(self.seed ^ job.id.wrapping_mul(0x2545_F491_4F6C_DD1D));
        let mut rng = fastrand::Rng::with_seed(seed);
        let failed = job.timeline.last().is_some_and(|e| e.1 == "failed");
        let mut c = choose(self, job, failed, &mut rng);
        let o = self.overrides.get(&job.id).cloned().unwrap_or_default();
        let started = job.started_at(Ms::MAX);
        if o.erased || started.is_none() {
            return LogPlan {
                job_id: job.id,
                size: 0,
                lines: Vec::new(),
                head: Vec::new(),
                far_line: Vec::new(),
                tail: Vec::new(),
                noise_before: 0,
                noise_after: 0,
                noise_seed: seed,
            };
        }
        c.size = o.size.unwrap_or(c.size);
        if let Some(class) = &o.class {
            c.class = class_name(class);
        }
        if let Some(decoy) = &o.decoy {
            c.decoy = class_name(decoy);
        }
        if let Some(far) = &o.far {
            c.far = class_name(far);
        }
        let ctx = Ctx::new(job, project, started.unwrap_or(job.created_at_ms));
        layout(&ctx, &c, failed, self.profile.far_distance, seed)
    }
}

/// Puts the parts together with exact lengths.
fn layout(ctx: &Ctx<'_>, c: &Choice, failed: bool, far_distance: u64, seed: u64) -> LogPlan {
    let head = ctx.head();
    let (tail, mut lines) = ctx.tail(c, failed);
    let far_line = c
        .far
        .map(|f| ctx.far_line(f, c.variant))
        .unwrap_or_default();
    let (h, t, f) = (head.len() as u64, tail.len() as u64, far_line.len() as u64);
    let noise_after = if far_line.is_empty() {
        0
    } else {
        far_distance.saturating_sub(f + t)
    };
    let fixed = h + t + f + noise_after;
    let size = c.size.max(fixed);
    if let Some(far) = c.far {
        lines.insert(
            0,
            PlacedLine {
                class: far,
                from_end: f + noise_after + t,
            },
        );
    }
    LogPlan {
        job_id: ctx.job.id,
        size,
        lines,
        head,
        far_line,
        tail,
        noise_before: size - fixed,
        noise_after,
        noise_seed: seed,
    }
}

/// What the text of one job's log is made of.
struct Ctx<'a> {
    job: &'a JobPlan,
    project: &'a str,
    /// Unix seconds of the start, for section markers.
    ts: i64,
    image: &'static str,
    runner: String,
}

const RESET: &str = "\x1b[0;m";
const CLEAR: &str = "\x1b[0K";

impl<'a> Ctx<'a> {
    fn new(job: &'a JobPlan, project: &'a str, started_ms: Ms) -> Self {
        let image = match job.name.as_str() {
            "compile" => "rust:1.83",
            "docker-build" => "docker:27.3",
            n if n.starts_with("rspec") => "ruby:3.3",
            "unit" | "lint" => "node:20",
            _ => "alpine:3.20",
        };
        let runner = job
            .runner
            .as_ref()
            .map_or_else(|| "shared-runner-1".to_owned(), |r| r.description.clone());
        Self {
            job,
            project,
            ts: started_ms / 1000,
            image,
            runner,
        }
    }

    fn section_start(&self, out: &mut Vec<u8>, name: &str, offset: i64, title: &str) {
        let _ = writeln!(
            out,
            "section_start:{}:{name}\r{CLEAR}{CLEAR}\x1b[36;1m{title}{RESET}{RESET}",
            self.ts + offset
        );
    }

    fn section_end(&self, out: &mut Vec<u8>, name: &str, offset: i64) {
        let _ = writeln!(out, "section_end:{}:{name}\r{CLEAR}", self.ts + offset);
    }

    /// The runner's preamble up to the first script command.
    fn head(&self) -> Vec<u8> {
        let mut o = Vec::with_capacity(2048);
        let h = mix(self.job.id);
        let token = format!("{:08x}", h as u32);
        let _ = writeln!(
            o,
            "{CLEAR}Running with gitlab-runner 17.{}.{} (12030cf4){RESET}",
            h % 6,
            (h >> 8) % 4
        );
        let _ = writeln!(
            o,
            "{CLEAR}  on {} {token}, system ID: s_{:012x}{RESET}",
            self.runner,
            (h >> 16) & 0xffff_ffff_ffff
        );
        self.section_start(
            &mut o,
            "prepare_executor",
            0,
            "Preparing the \"docker\" executor",
        );
        let img = self.image;
        let _ = writeln!(
            o,
            "{CLEAR}Using Docker executor with image {img} ...{RESET}"
        );
        let _ = writeln!(o, "{CLEAR}Pulling docker image {img} ...{RESET}");
        let digest = sha(h ^ 7);
        let _ = writeln!(
            o,
            "{CLEAR}Using docker image sha256:{digest} for {img} with digest {}@sha256:{digest} ...{RESET}",
            img.split(':').next().unwrap_or(img)
        );
        self.section_end(&mut o, "prepare_executor", 4);
        self.section_start(&mut o, "prepare_script", 4, "Preparing environment");
        let _ = writeln!(
            o,
            "Running on runner-{token}-project-{}-concurrent-0 via runner-host-{}...",
            self.job.project_id,
            h % 3
        );
        self.section_end(&mut o, "prepare_script", 5);
        self.section_start(
            &mut o,
            "get_sources",
            5,
            "Getting source from Git repository",
        );
        let _ = writeln!(
            o,
            "\x1b[32;1mFetching changes with git depth set to 20...{RESET}"
        );
        let _ = writeln!(
            o,
            "Initialized empty Git repository in /builds/{}/.git/",
            self.project
        );
        let _ = writeln!(o, "\x1b[32;1mCreated fresh repository.{RESET}");
        let _ = writeln!(
            o,
            "\x1b[32;1mChecking out {} as detached HEAD (ref is {})...{RESET}",
            &sha(self.job.pipeline_id)[..8],
            self.job.ref_
        );
        let _ = writeln!(o, "\n\x1b[32;1mSkipping Git submodules setup{RESET}");
        self.section_end(&mut o, "get_sources", 8);
        self.section_start(
            &mut o,
            "step_script",
            8,
            "Executing \"step_script\" stage of the job script",
        );
        let _ = writeln!(o, "\x1b[32;1m$ {}{RESET}", self.command());
        o
    }

    fn command(&self) -> &'static str {
        match self.image {
            "rust:1.83" => "cargo build --locked --all-targets",
            "docker:27.3" => "docker build -t $CI_REGISTRY_IMAGE:$CI_COMMIT_SHA .",
            "ruby:3.3" => "bundle exec rspec --format progress",
            "node:20" => "npm ci && npm test",
            _ => "./scripts/deploy.sh",
        }
    }

    /// The end of the log, and its class lines (distances from the end filled in).
    fn tail(&self, c: &Choice, failed: bool) -> (Vec<u8>, Vec<PlacedLine>) {
        let mut o = Vec::with_capacity(4096);
        let mut noise = Noise::new(c.variant, 0);
        let mut starts: Vec<(&'static str, usize)> = Vec::new();
        noise.lines_into(&mut o, 6);
        if let Some(decoy) = c.decoy {
            starts.push((decoy, o.len()));
            o.extend_from_slice(class_text(decoy, c.variant, true).0.as_bytes());
            noise.lines_into(&mut o, 4);
        }
        let (script, last) = match c.class {
            Some(class) => class_text(class, c.variant >> 8, false),
            None => (String::new(), None),
        };
        if let Some(class) = c.class {
            starts.push((class, o.len()));
        }
        o.extend_from_slice(script.as_bytes());
        self.section_end(&mut o, "step_script", 60);
        self.section_start(
            &mut o,
            "cleanup_file_variables",
            60,
            "Cleaning up project directory and file based variables",
        );
        self.section_end(&mut o, "cleanup_file_variables", 61);
        o.push(b'\n');
        match (failed, last) {
            (false, _) => {
                let _ = writeln!(o, "\x1b[32;1mJob succeeded{RESET}");
            }
            (true, Some(line)) => {
                let _ = writeln!(o, "\x1b[31;1m{line}\n{RESET}");
            }
            (true, None) => {
                let _ = writeln!(o, "\x1b[31;1mERROR: Job failed: exit code 1\n{RESET}");
            }
        }
        let len = o.len() as u64;
        let lines = (starts.into_iter())
            .map(|(class, at)| PlacedLine {
                class,
                from_end: len - at as u64,
            })
            .collect();
        (o, lines)
    }

    /// A class line in the middle of the log (script output).
    fn far_line(&self, class: &'static str, variant: u64) -> Vec<u8> {
        class_text(class, variant >> 16, true).0.into_bytes()
    }
}

/// The script output of a class (lines ending in `\n`) and the runner's last line when the
/// class puts its own there (`ERROR: Job failed: …`). `script_only`: a variant with no last
/// line, for a line that is not the job's end.
fn class_text(class: &str, variant: u64, script_only: bool) -> (String, Option<String>) {
    let v = variant % 4;
    let s = |t: &str| (format!("{t}\n"), None);
    let last = |script: &str, line: &str| (script.to_owned(), Some(line.to_owned()));
    match class {
        "oom" => match v {
            0 if !script_only => last("Killed\n", "ERROR: Job failed: exit code 137"),
            0 | 1 => s(
                "ERROR: Job failed (system failure): pod \"runner-x7k2-concurrent-0\" container \"build\" terminated: OOMKilled",
            ),
            2 => s(
                "fatal error: runtime: out of memory\n\ngoroutine 1 [running]:\nruntime.throw({0x1c2d3e4, 0x16})",
            ),
            _ => s(
                "<--- Last few GCs --->\n\nFATAL ERROR: Reached heap limit Allocation failed - JavaScript heap out of memory\n 1: 0xb7a940 node::Abort() [node]",
            ),
        },
        "disk_full" => {
            s("cp: error writing 'target/debug/deps/libapi-3f1c2d.rlib': No space left on device")
        }
        "registry_rate_limit" => s(
            "Error response from daemon: toomanyrequests: You have reached your pull rate limit. You may increase the limit by authenticating and upgrading: https://www.docker.com/increase-rate-limit",
        ),
        "image_pull" => match v {
            0 | 1 if !script_only => last(
                "",
                "ERROR: Job failed: failed to pull image \"registry.example.com/acme/builder:1.4\" with specified policies [always]: Error response from daemon: manifest unknown: manifest unknown (manager.go:250:0s)",
            ),
            0 | 2 => s(
                "Error response from daemon: pull access denied for acme/builder, repository does not exist or may require 'docker login': denied: requested access to the resource is denied",
            ),
            _ => s(
                "Error response from daemon: manifest for registry.example.com/acme/builder:1.4 not found: manifest unknown: manifest unknown",
            ),
        },
        "network" => match v {
            0 => s("curl: (6) Could not resolve host: deb.debian.org"),
            1 => s(
                "fatal: unable to access 'https://gitlab.example.com/acme/api.git/': Failed to connect to gitlab.example.com port 443 after 130812 ms: Connection timed out",
            ),
            2 => s("read tcp 10.0.3.7:51234->104.16.0.35:443: read: connection reset by peer"),
            _ => s("Get \"https://registry-1.docker.io/v2/\": net/http: TLS handshake timeout"),
        },
        "timeout" => last(
            "",
            "ERROR: Job failed: execution took longer than 1h0m0s seconds",
        ),
        "dependency" => match v {
            0 | 1 => {
                s("npm ERR! code ERESOLVE\nnpm ERR! ERESOLVE unable to resolve dependency tree")
            }
            2 => s(
                "ERROR: Could not find a version that satisfies the requirement torch==2.9.1 (from versions: none)",
            ),
            _ => s("error: failed to select a version for `tokio`."),
        },
        "compile" => match v {
            0 => s("error[E0308]: mismatched types\n  --> src/main.rs:12:5"),
            1 => s("error: could not compile `api` (lib) due to 2 previous errors"),
            _ => s(
                "SyntaxError: Unexpected token '}'\n    at internalCompileFunction (node:internal/vm:76:18)",
            ),
        },
        "test_failure" => match v {
            0 => s(
                "test result: FAILED. 41 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 3.21s",
            ),
            1 => s(
                "========================= 3 failed, 120 passed in 12.34s =========================",
            ),
            2 => s("--- FAIL: TestCheckout (0.02s)\n    checkout_test.go:41: got 3, want 4"),
            _ => match variant % 3 {
                0 => s("Tests run: 57, Failures: 2, Errors: 0, Skipped: 1"),
                1 => s("25 examples, 3 failures"),
                _ => s("Tests:       2 failed, 48 passed, 50 total"),
            },
        },
        _ => (String::new(), None),
    }
}

/// One part of a body.
pub(crate) enum Part {
    Bytes(Vec<u8>),
    Noise(Noise),
}

/// Noise lines, exactly `remaining` bytes of them, written chunk by chunk. Never a word any
/// failure class matches.
pub(crate) struct Noise {
    rng: fastrand::Rng,
    remaining: u64,
    ts: u64,
}

const CRATES: [&str; 8] = [
    "serde", "tokio", "hyper", "regex", "rand", "chrono", "tracing", "axum",
];
const PACKAGES: [&str; 6] = ["lodash", "react", "express", "webpack", "jest", "zod"];
const SPECS: [&str; 5] = ["checkout", "billing", "search", "login", "cache"];

impl Noise {
    pub(crate) fn new(seed: u64, remaining: u64) -> Self {
        Self {
            rng: fastrand::Rng::with_seed(seed),
            remaining,
            ts: 1_700_000_000 + seed % 100_000_000,
        }
    }

    /// The next chunk (about [`CHUNK`] bytes), `None` when done.
    pub(crate) fn next_chunk(&mut self) -> Option<Vec<u8>> {
        if self.remaining == 0 {
            return None;
        }
        let want = self.remaining.min(CHUNK as u64) as usize;
        let mut out = Vec::with_capacity(want + 512);
        while out.len() < want {
            self.line(&mut out);
        }
        if out.len() > want {
            // The last line does not fit: a plain filler line takes the rest (never a cut
            // escape sequence).
            let start = out[..want]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1);
            out.truncate(start);
            out.resize(want, b'.');
            if want > start {
                out[want - 1] = b'\n';
            }
        }
        self.remaining -= want as u64;
        Some(out)
    }

    /// `n` lines, for a tail.
    fn lines_into(&mut self, out: &mut Vec<u8>, n: usize) {
        for _ in 0..n {
            self.line(out);
        }
    }

    fn line(&mut self, o: &mut Vec<u8>) {
        let r = &mut self.rng;
        let (a, b, c) = (r.u32(0..40), r.u32(0..30), r.u32(0..200));
        let _ = match r.u32(0..12) {
            0 => writeln!(
                o,
                "\x1b[1m\x1b[92m   Compiling\x1b[0m {} v1.{a}.{b}",
                CRATES[c as usize % 8]
            ),
            1 => writeln!(
                o,
                "npm http fetch GET 200 https://registry.npmjs.org/{} {c}ms (cache hit)",
                PACKAGES[a as usize % 6]
            ),
            2 => {
                for pct in (0..100).step_by(20 + b as usize) {
                    let _ = write!(o, "Receiving objects: {pct:3}% ({pct}0/1000)\r");
                }
                writeln!(
                    o,
                    "Receiving objects: 100% (1000/1000), 2.{a} MiB | 8.{b} MiB/s, done."
                )
            }
            3 => {
                let dots = ".".repeat(20 + c as usize % 60);
                writeln!(o, "{dots}\x1b[33m*\x1b[0m{}", ".".repeat(b as usize))
            }
            4 => writeln!(
                o,
                "test {}::spec::case_{c} ... \x1b[32mok\x1b[0m",
                SPECS[a as usize % 5]
            ),
            5 => writeln!(
                o,
                "Downloading {}-1.{a}.{b}.tar.gz ({c} kB)",
                PACKAGES[a as usize % 6]
            ),
            6 => writeln!(
                o,
                "Step {}/12 : RUN apt-get install -y --no-install-recommends curl",
                a % 12 + 1
            )
            .and_then(|()| writeln!(o, " ---> Running in {:012x}", r.u64(..) >> 16)),
            7 => writeln!(
                o,
                "ok  \tgithub.com/acme/api/internal/{}\t0.{c}s",
                SPECS[b as usize % 5]
            ),
            8 => writeln!(
                o,
                "  \x1b[32m✓\x1b[39m renders the {} page ({c} ms)",
                SPECS[a as usize % 5]
            ),
            9 => {
                self.ts += u64::from(a);
                let name = format!("{}_{c}", SPECS[b as usize % 5]);
                let _ = writeln!(
                    o,
                    "section_start:{}:{name}[collapsed=true]\r{CLEAR}\x1b[0;33mwarming {name}{RESET}",
                    self.ts
                );
                writeln!(
                    o,
                    "cache key {name}-{a}: hit\nsection_end:{}:{name}\r{CLEAR}",
                    self.ts + 1
                )
            }
            10 => writeln!(
                o,
                "[INFO] Building jar: /builds/acme/api/target/api-1.{a}.{b}.jar"
            ),
            _ => writeln!(o, "\x1b[0;32m{c} files checked, {b} warnings\x1b[0m"),
        };
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn noise_has_the_exact_length_and_never_a_class_word() {
        for (seed, len) in [(1, 0), (2, 1), (3, 2), (4, 100), (5, 65_536), (6, 300_001)] {
            let mut n = Noise::new(seed, len);
            let mut all = Vec::new();
            while let Some(c) = n.next_chunk() {
                all.extend_from_slice(&c);
            }
            assert_eq!(all.len() as u64, len, "seed {seed}");
            if len > 0 {
                assert_eq!(all.last(), Some(&b'\n'));
            }
            let text = String::from_utf8_lossy(&all).to_lowercase();
            for word in [
                "fail",
                "error",
                "killed",
                "memory",
                "space left",
                "toomany",
                "denied",
                "unknown",
                "resolve",
                "timed out",
                "reset",
                "timeout",
                "took longer",
                "version",
                "could not",
                "syntax",
                "examples",
                "tests:",
                "= ",
            ] {
                assert!(!text.contains(word), "noise holds {word:?}");
            }
        }
    }
}
