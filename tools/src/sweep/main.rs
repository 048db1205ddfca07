fn main() {
    eprintln!("sweep: being written");
    std::process::exit(1)
}
