"""Stream consumers: read batches, process them, commit them."""
