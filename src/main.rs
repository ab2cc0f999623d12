//! The `crier` binary: parse the configuration, start the server, wait for a signal, drain, exit.
fn main() {
    println!("crier {}", env!("CARGO_PKG_VERSION"));
}
