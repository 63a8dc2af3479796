"""Every SQL statement the console sends to a *target* database lives here, one module per
concern. Values are bound parameters; identifiers are validated and quoted by the driver."""
