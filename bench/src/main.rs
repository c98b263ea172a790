//! `tapnet-bench`: runs `tapnet bench` and `tapnet demo` (see `cli.rs`).

fn main() {
    bench::cli::main()
}
