//! The `czctl` command: parses arguments and runs the chosen command.

mod cli;

use clap::{CommandFactory, FromArgMatches};
use std::process::ExitCode;

fn main() -> ExitCode {
    let matches = cli::Cli::command().get_matches();
    let args = cli::Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off")),
        )
        .init();
    // One thread: a developer's tunnel carries one person's traffic, which one core serves many
    // times over, and tasks that wake each other on one thread pay for no context switch or
    // cross-thread hand-off (measured against two workers: 0.4 instead of 1.3 context switches
    // per intercepted request, 18% less CPU; against one worker beside the main thread: CPU per
    // intercepted request 16.8–17.4 → 14.0–15.8 µs). Nothing in czctl blocks its thread: the
    // terminal is written by a thread of its own.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: could not start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(cli::run(args, &matches));
    cli::flush_output();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{}", render(&error));
            ExitCode::FAILURE
        }
    }
}

/// `error: what happened`, then one `caused by:` line per cause that adds something.
fn render(error: &anyhow::Error) -> String {
    let mut chain = error.chain();
    let mut text = format!(
        "error: {}",
        chain.next().map(ToString::to_string).unwrap_or_default()
    );
    for cause in chain {
        let line = cause.to_string();
        if !text.contains(&line) {
            text.push_str(&format!("\n  caused by: {line}"));
        }
    }
    text
}
