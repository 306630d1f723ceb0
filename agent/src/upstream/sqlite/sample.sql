-- The sample dataset written into a database file that `agent connect
-- --sqlite FILE` creates because FILE did not exist: a small shop, enough
-- to try every tool of the built-in SQLite MCP server.

CREATE TABLE customers (
    id         INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    email      TEXT NOT NULL UNIQUE,
    city       TEXT NOT NULL,
    country    TEXT NOT NULL,
    signed_up  TEXT NOT NULL -- ISO 8601 date
);

CREATE TABLE products (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    category    TEXT NOT NULL,
    price       REAL NOT NULL CHECK (price >= 0),
    in_stock    INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE orders (
    id           INTEGER PRIMARY KEY,
    customer_id  INTEGER NOT NULL REFERENCES customers(id),
    product_id   INTEGER NOT NULL REFERENCES products(id),
    quantity     INTEGER NOT NULL CHECK (quantity > 0),
    ordered_at   TEXT NOT NULL, -- ISO 8601 date
    status       TEXT NOT NULL CHECK (status IN ('pending', 'shipped', 'delivered', 'returned'))
);

CREATE INDEX orders_by_customer ON orders(customer_id);

INSERT INTO customers (id, name, email, city, country, signed_up) VALUES
    (1, 'Ada Lovelace', 'ada@example.com', 'London', 'UK', '2024-01-15'),
    (2, 'Alan Turing', 'alan@example.com', 'Manchester', 'UK', '2024-02-03'),
    (3, 'Grace Hopper', 'grace@example.com', 'New York', 'USA', '2024-02-20'),
    (4, 'Katherine Johnson', 'katherine@example.com', 'Hampton', 'USA', '2024-03-11'),
    (5, 'Edsger Dijkstra', 'edsger@example.com', 'Rotterdam', 'Netherlands', '2024-03-29'),
    (6, 'Barbara Liskov', 'barbara@example.com', 'Boston', 'USA', '2024-04-08'),
    (7, 'Donald Knuth', 'donald@example.com', 'Stanford', 'USA', '2024-05-17'),
    (8, 'Margaret Hamilton', 'margaret@example.com', 'Cambridge', 'USA', '2024-06-01'),
    (9, 'Niklaus Wirth', 'niklaus@example.com', 'Zurich', 'Switzerland', '2024-06-22'),
    (10, 'Frances Allen', 'frances@example.com', 'Peru', 'USA', '2024-07-14'),
    (11, 'Tim Berners-Lee', 'tim@example.com', 'Geneva', 'Switzerland', '2024-08-30'),
    (12, 'Radia Perlman', 'radia@example.com', 'Seattle', 'USA', '2024-09-09');

INSERT INTO products (id, name, category, price, in_stock) VALUES
    (1, 'Mechanical keyboard', 'peripherals', 89.00, 40),
    (2, 'Wireless mouse', 'peripherals', 25.50, 120),
    (3, '27-inch monitor', 'displays', 279.99, 15),
    (4, 'USB-C dock', 'accessories', 129.00, 22),
    (5, 'Laptop stand', 'accessories', 39.90, 60),
    (6, 'Noise-cancelling headphones', 'audio', 199.00, 18),
    (7, 'Webcam', 'peripherals', 59.00, 35),
    (8, 'Desk lamp', 'office', 34.00, 50),
    (9, 'Ergonomic chair', 'office', 349.00, 6),
    (10, 'Portable SSD 1TB', 'storage', 109.00, 0);

INSERT INTO orders (id, customer_id, product_id, quantity, ordered_at, status) VALUES
    (1, 1, 1, 1, '2024-02-01', 'delivered'),
    (2, 1, 2, 2, '2024-02-01', 'delivered'),
    (3, 2, 3, 1, '2024-02-10', 'delivered'),
    (4, 3, 6, 1, '2024-03-02', 'delivered'),
    (5, 3, 8, 3, '2024-03-05', 'returned'),
    (6, 4, 4, 1, '2024-03-20', 'delivered'),
    (7, 5, 9, 1, '2024-04-02', 'delivered'),
    (8, 5, 5, 2, '2024-04-02', 'delivered'),
    (9, 6, 1, 1, '2024-04-15', 'delivered'),
    (10, 6, 7, 1, '2024-04-16', 'returned'),
    (11, 7, 3, 2, '2024-05-20', 'delivered'),
    (12, 7, 10, 1, '2024-05-21', 'delivered'),
    (13, 8, 2, 1, '2024-06-05', 'delivered'),
    (14, 8, 6, 1, '2024-06-05', 'shipped'),
    (15, 9, 5, 1, '2024-07-01', 'delivered'),
    (16, 9, 4, 1, '2024-07-02', 'delivered'),
    (17, 10, 8, 2, '2024-07-20', 'delivered'),
    (18, 10, 1, 1, '2024-08-03', 'shipped'),
    (19, 11, 7, 1, '2024-09-04', 'delivered'),
    (20, 11, 3, 1, '2024-09-04', 'pending'),
    (21, 12, 9, 1, '2024-09-15', 'shipped'),
    (22, 12, 2, 4, '2024-09-15', 'pending'),
    (23, 2, 10, 2, '2024-10-01', 'pending'),
    (24, 4, 6, 1, '2024-10-03', 'pending'),
    (25, 1, 5, 1, '2024-10-07', 'pending');
