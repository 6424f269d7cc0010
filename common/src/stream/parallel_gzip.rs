//! gzip on several cores: the input is cut into blocks, each compressed on a worker thread
//! into an independent gzip member, and the members are written in order.
//!
//! Concatenated members are one valid gzip file (RFC 1952, section 2.2): `gzip -d`, `tar -xzf`
//! and [`flate2::read::MultiGzDecoder`] read them as one stream.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Input bytes per member: large enough that the per-member header and the lost dictionary
/// cost well under 0.1%, small enough to keep memory low (about 3 blocks per thread in flight).
const BLOCK: usize = 1 << 20;

struct Job {
    data: Vec<u8>,
    done: Sender<io::Result<Vec<u8>>>,
}

/// A gzip writer that compresses on `threads` worker threads.
pub struct ParallelGzEncoder<W: Write> {
    inner: Option<W>,
    buffer: Vec<u8>,
    jobs: Option<Sender<Job>>,
    pending: VecDeque<Receiver<io::Result<Vec<u8>>>>,
    max_pending: usize,
    workers: Vec<JoinHandle<()>>,
}

impl<W: Write> ParallelGzEncoder<W> {
    pub fn new(inner: W, level: u32, threads: u32) -> Self {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let level = flate2::Compression::new(level.min(9));
        let workers = (0..threads.max(1))
            .map(|_| {
                let rx = Arc::clone(&rx);
                std::thread::spawn(move || loop {
                    let job = match rx.lock() {
                        Ok(guard) => guard.recv(),
                        Err(_) => return,
                    };
                    let Ok(job) = job else { return };
                    let _ = job.done.send(compress(&job.data, level));
                })
            })
            .collect();
        ParallelGzEncoder {
            inner: Some(inner),
            buffer: Vec::with_capacity(BLOCK),
            jobs: Some(tx),
            pending: VecDeque::new(),
            max_pending: 2 * threads.max(1) as usize + 1,
            workers,
        }
    }

    fn dispatch(&mut self) -> io::Result<()> {
        let data = std::mem::replace(&mut self.buffer, Vec::with_capacity(BLOCK));
        let (done, result) = mpsc::channel();
        self.jobs
            .as_ref()
            .expect("encoder not finished")
            .send(Job { data, done })
            .map_err(|_| io::Error::other("gzip worker threads stopped"))?;
        self.pending.push_back(result);
        while self.pending.len() >= self.max_pending {
            self.write_oldest()?;
        }
        Ok(())
    }

    fn write_oldest(&mut self) -> io::Result<()> {
        if let Some(result) = self.pending.pop_front() {
            let member = result
                .recv()
                .map_err(|_| io::Error::other("gzip worker thread died"))??;
            self.inner
                .as_mut()
                .expect("not finished")
                .write_all(&member)?;
        }
        Ok(())
    }

    /// Compresses what is buffered, writes every member in order and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        // An empty input still becomes one (empty) member, so the output is valid gzip.
        if !self.buffer.is_empty() || self.pending.is_empty() {
            self.dispatch()?;
        }
        while !self.pending.is_empty() {
            self.write_oldest()?;
        }
        self.jobs = None;
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
        let mut inner = self.inner.take().expect("finish is called once");
        inner.flush()?;
        Ok(inner)
    }
}

fn compress(data: &[u8], level: flate2::Compression) -> io::Result<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(Vec::with_capacity(data.len() / 3), level);
    enc.write_all(data)?;
    enc.finish()
}

impl<W: Write> Write for ParallelGzEncoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = BLOCK - self.buffer.len();
        let n = room.min(buf.len());
        self.buffer.extend_from_slice(&buf[..n]);
        if self.buffer.len() == BLOCK {
            self.dispatch()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.inner.as_mut() {
            Some(inner) => inner.flush(),
            None => Ok(()),
        }
    }
}
