//! `sluice-bench`: see the crate documentation.

fn main() -> std::process::ExitCode {
    sluice_bench::cli::main()
}
