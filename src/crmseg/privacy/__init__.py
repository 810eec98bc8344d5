"""Privacy: forgetting people everywhere crmseg keeps them (see ``forget``)."""
