//! layers-sim: a local, faithful simulator of the Layers Partner API.
