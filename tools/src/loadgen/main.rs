fn main() {
    eprintln!("loadgen: being written");
    std::process::exit(1)
}
