//! In-process tests of whole polls against the simulator.
