//! The `tapnet` binary: the control plane and its command line (`cli/`).

fn main() {
    control::cli::main()
}
