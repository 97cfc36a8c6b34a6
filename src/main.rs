//! The `twnode` binary: everything lives in the library; see `twnode --help`.

fn main() -> std::process::ExitCode {
    twnode::cli::main()
}
