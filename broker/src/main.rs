//! `sluiceway`: the broker and the command-line client. See [`sluiceway_broker::cli`].

fn main() -> std::process::ExitCode {
    sluiceway_broker::cli::main()
}
