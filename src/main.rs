//! The `gochat` binary: everything lives in the library; this only hands over the exit code.

/// mimalloc instead of glibc's malloc: under load, allocation and free (glibc's chunk
/// consolidation above all) took about a third of the worker's CPU in `bench runtime`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    gochat::cli::main()
}
