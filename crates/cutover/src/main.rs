//! The `cutover` binary: glue only; everything lives in the library.

fn main() -> std::process::ExitCode {
    cutover::cli::main()
}
