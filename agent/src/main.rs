//! The `ferry` binary: everything lives in [`ferry_agent::cli`]; this is its entry point.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    ferry_agent::cli::main()
}
