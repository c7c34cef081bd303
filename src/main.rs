//! The `gitlab-jobs-exporter` binary; all logic lives in the library.

fn main() -> std::process::ExitCode {
    gitlab_jobs_exporter::cli::main()
}
