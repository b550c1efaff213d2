"""What an institution does with its own data: the model, local training, and simulated (mis)behaviours."""
