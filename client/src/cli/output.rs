//! Human output: what happened, one line each, unless `--quiet`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use czctl::TunnelEvent;
use tokio::sync::broadcast::error::RecvError;

use super::terminal::{self, Stream};

/// Prints to stdout unless quiet; warnings go to stderr.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    pub quiet: bool,
}

impl Output {
    /// Prints `events` as they come, through the terminal's own thread ([`terminal`]): a
    /// terminal that is paused or a pipe nobody reads never holds up the tunnel (lines that pile
    /// up meanwhile are dropped, and counted). Printing ends when the returned flag is set, or
    /// with the tunnel. Quiet output prints no event, so it lets `events` go: with no receiver
    /// left the tunnel does not even build request events, and no thread is woken per request.
    pub fn print_events(
        self,
        mut events: tokio::sync::broadcast::Receiver<TunnelEvent>,
    ) -> Arc<AtomicBool> {
        let done = Arc::new(AtomicBool::new(false));
        if self.quiet {
            return done;
        }
        let stop = done.clone();
        tokio::spawn(async move {
            loop {
                let event = events.recv().await;
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                match event {
                    Ok(event) => self.event(&event),
                    Err(RecvError::Lagged(skipped)) => self.warn(format_args!(
                        "{skipped} events not shown: czctl could not keep up with them"
                    )),
                    Err(RecvError::Closed) => return,
                }
            }
        });
        done
    }

    /// A line of progress or information.
    pub fn info(&self, line: impl std::fmt::Display) {
        if !self.quiet {
            terminal::line(Stream::Stdout, line.to_string());
        }
    }

    /// A problem the user should act on.
    pub fn warn(&self, line: impl std::fmt::Display) {
        if !self.quiet {
            terminal::line(Stream::Stderr, format!("warning: {line}"));
        }
    }

    /// A step of setting up or tearing down an intercept.
    pub fn step(&self, step: czctl::Progress) {
        self.info(format_args!("✓ {step}"));
    }

    /// Prints one tunnel event the way a user wants to read it.
    pub fn event(&self, event: &TunnelEvent) {
        match event {
            TunnelEvent::Connected { path, .. } => self.info(format_args!("tunnel connected over {path}")),
            TunnelEvent::CarrierLost => self.warn("tunnel carrier lost — reconnecting…"),
            TunnelEvent::CarrierBack { after } if after.as_secs() == 0 => self.info(format_args!("tunnel back after {} ms", after.as_millis())),
            TunnelEvent::CarrierBack { after } => self.info(format_args!("tunnel back after {:.1} s", after.as_secs_f64())),
            TunnelEvent::ProxyDraining => self.info("the proxy is shutting down — connecting to its replacement…"),
            TunnelEvent::Disconnected { reason } => self.warn(format_args!("tunnel lost ({reason}); reconnecting")),
            TunnelEvent::ConnectFailed { error, retry_in } => {
                self.warn(format_args!("{error}; retrying in {retry_in:?}"))
            }
            TunnelEvent::Request(request) => self.info(format_args!(
                "{} {} -> {} ({:.1} ms, {} bytes)",
                request.method,
                request.path,
                request.status.as_u16(),
                request.duration.as_secs_f64() * 1000.0,
                request.response_bytes
            )),
            TunnelEvent::LocalAppUnreachable { address, error } => self.warn(format_args!(
                "nothing is answering on {address} ({error}): intercepted requests get 502 until your app listens on port {}",
                address.port()
            )),
            TunnelEvent::Notice(notice) => self.warn(format_args!("the proxy says: {notice}")),
            TunnelEvent::LocalAppReachable { address } => self.info(format_args!("your app on {address} answers again")),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_output_lets_the_events_go() {
        let (events_tx, events) = tokio::sync::broadcast::channel::<TunnelEvent>(4);
        let _ = Output { quiet: true }.print_events(events);
        // No receiver left: the tunnel builds no request events and wakes no printing thread.
        assert_eq!(events_tx.receiver_count(), 0);
    }

    #[tokio::test]
    async fn printing_output_keeps_listening() {
        let (events_tx, events) = tokio::sync::broadcast::channel::<TunnelEvent>(4);
        let printing = Output { quiet: false }.print_events(events);
        assert_eq!(events_tx.receiver_count(), 1);
        printing.store(true, Ordering::Relaxed);
    }
}
