//! The `agent` binary: see `agent::cli` for the commands and README.md for the picture.

fn main() -> std::process::ExitCode {
    agent::cli::main()
}
