//! An undo stack: clean-up steps registered as an operation goes, run in reverse order if it does not complete.
//!
//! An operation that makes several changes (a box directory, a map entry, a flag) pushes the undo of each as it
//! makes it, and calls [`Cleanup::disarm`] once it has succeeded. Any early return, `?` or a dropped future runs the
//! undos, so no error branch has to remember them.

/// One undo step: what it undoes, and how.
type Step = (&'static str, Box<dyn FnOnce() + Send>);

/// Undo steps, run newest first when dropped unless disarmed.
#[must_use = "a Cleanup runs its steps when dropped: keep it until the operation has succeeded"]
#[derive(Default)]
pub struct Cleanup {
    steps: Vec<Step>,
}

impl Cleanup {
    /// An empty stack.
    pub fn new() -> Self {
        Cleanup::default()
    }

    /// Registers the undo of a change just made; `what` names it in the debug log.
    pub fn push(&mut self, what: &'static str, undo: impl FnOnce() + Send + 'static) {
        self.steps.push((what, Box::new(undo)));
    }

    /// The operation succeeded: keep its changes.
    pub fn disarm(mut self) {
        self.steps.clear();
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        while let Some((what, undo)) = self.steps.pop() {
            tracing::debug!("undoing: {what}");
            undo();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::Cleanup;

    #[test]
    fn undoes_newest_first_unless_disarmed() {
        let log = Arc::new(Mutex::new(Vec::new()));
        {
            let mut c = Cleanup::new();
            for i in 0..3 {
                let l = log.clone();
                c.push("step", move || l.lock().unwrap().push(i));
            }
        }
        assert_eq!(*log.lock().unwrap(), vec![2, 1, 0]);
        let mut c = Cleanup::new();
        let l = log.clone();
        c.push("step", move || l.lock().unwrap().push(9));
        c.disarm();
        assert_eq!(log.lock().unwrap().len(), 3);
    }
}
