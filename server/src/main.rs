//! The `sluice` binary.

/// Per-thread heaps: the produce path allocates per message on several
/// threads (see `docs/benchmarks.md`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    sluice_server::cli::main()
}
