//! The sample workload as a small binary of its own, so test images stay small.
#[path = "../sample.rs"]
mod sample;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(sample::main(&args));
}
