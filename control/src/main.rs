fn main() {
    control::cli::main()
}
