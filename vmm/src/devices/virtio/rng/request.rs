//! Filling one queue's chains with random bytes. Each chain gets at most [`MAX_PER_CHAIN`] bytes (a guest cannot
//! make the host generate gigabytes in one request); chains without writable buffers complete with length 0.

use std::io::Write;

use vm_memory::GuestMemoryMmap;

use crate::devices::virtio::{Queue, QueueT};

/// Most bytes given to one chain.
pub const MAX_PER_CHAIN: usize = 64 * 1024;

/// Fills `buf` from the kernel's CSPRNG.
fn getrandom(buf: &mut [u8]) -> std::io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        // SAFETY: writes at most `len - done` bytes into the live buffer.
        let n = unsafe { libc::getrandom(buf[done..].as_mut_ptr().cast(), buf.len() - done, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        } else {
            done += n as usize;
        }
    }
    Ok(())
}

/// Serves every available chain; returns whether any completed.
pub fn process_queue(queue: &mut Queue, mem: &GuestMemoryMmap) -> bool {
    let mut used = false;
    let mut buf = vec![0u8; 4096];
    while let Some(chain) = queue.pop_descriptor_chain(mem) {
        let head = chain.head_index();
        let mut written = 0;
        if let Ok(mut w) = chain.writer(mem) {
            let mut left = w.available_bytes().min(MAX_PER_CHAIN);
            while left > 0 {
                let n = left.min(buf.len());
                if getrandom(&mut buf[..n]).is_err() || w.write_all(&buf[..n]).is_err() {
                    break;
                }
                left -= n;
                written += n;
            }
        }
        // A head outside the queue cannot be returned to the driver: it is dropped, and the queue goes on.
        if queue.add_used(mem, head, written as u32).is_ok() {
            used = true;
        }
    }
    used
}
