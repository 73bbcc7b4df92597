"""AMI: our own client, its wire format, and the call tracker of the ami call mode."""
