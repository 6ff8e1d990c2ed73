package api

import (
	"context"
	"net/http"
	"time"

	"github.com/danielgtaylor/huma/v2"

	"riverbank"
	"riverbank/internal/orders"
)

// ProductBody is a product as the API shows it.
type ProductBody struct {
	SKU            string    `json:"sku" example:"TEA-001"`
	Name           string    `json:"name" example:"Longjing tea 250 g"`
	PriceMinor     int64     `json:"price_minor" example:"12800"`
	Currency       string    `json:"currency" example:"CNY"`
	StockOnHand    int64     `json:"stock_on_hand" doc:"Units in the warehouse, reserved ones included, sold ones excluded."`
	StockReserved  int64     `json:"stock_reserved" doc:"Units held by orders awaiting confirmation (CREATED)."`
	StockAvailable int64     `json:"stock_available" doc:"stock_on_hand − stock_reserved: what a new order can take."`
	Sold           int64     `json:"sold" doc:"Units taken out by confirmed orders and not returned by a cancellation."`
	CreatedAt      time.Time `json:"created_at"`
	UpdatedAt      time.Time `json:"updated_at"`
}

func productBody(p *orders.Product) ProductBody {
	return ProductBody{
		SKU: p.SKU, Name: p.Name, PriceMinor: p.PriceMinor, Currency: p.Currency,
		StockOnHand: p.StockOnHand, StockReserved: p.StockReserved, StockAvailable: p.StockAvailable, Sold: p.Sold,
		CreatedAt: p.CreatedAt, UpdatedAt: p.UpdatedAt,
	}
}

type skuInput struct {
	SKU string `path:"sku" pattern:"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$" maxLength:"64" doc:"Stock-keeping unit." example:"TEA-001"`
}

type putProductInput struct {
	SKU  string `path:"sku" pattern:"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$" maxLength:"64" doc:"Stock-keeping unit." example:"TEA-001"`
	Body struct {
		Name       string `json:"name" minLength:"1" maxLength:"200"`
		PriceMinor int64  `json:"price_minor" minimum:"1" maximum:"1000000000000000" doc:"Unit price in minor units; new orders use it, existing orders keep theirs."`
		Currency   string `json:"currency" pattern:"^[A-Z]{3}$" doc:"Must be the currency of the platform:cash ledger account (CNY), which order payments are posted to." example:"CNY"`
		Stock      int64  `json:"stock" minimum:"0" maximum:"1000000000000" doc:"The new on-hand stock (a stock take or restock). Must be at least stock_reserved; sold units are unaffected."`
	}
}

type productOutput struct {
	Status int
	Body   ProductBody
}

func (h *handlers) registerProducts(api huma.API) {
	tags := []string{"Products"}
	huma.Register(api, huma.Operation{OperationID: "put-product", Method: http.MethodPut, Path: "/v1/products/{sku}", Summary: "Create or update a product and set its on-hand stock", Tags: tags,
		Description: "Creates the product (201) or replaces its name, price and on-hand stock (200). `stock` is the new on-hand count: " +
			"reservations and sold units are kept, so this is the only operation that changes stock_on_hand + sold. " +
			"A stock below stock_reserved is 409 conflict; a currency other than the platform:cash account's (CNY) is 422 validation_failed, " +
			"because payments of the product's orders post to that account.",
		DefaultStatus: http.StatusCreated,
		Metadata:      answers(codes(riverbank.ECONFLICT), map[int]string{http.StatusOK: "The product existed: its name, price and on-hand stock are replaced."})}, h.putProduct)
	huma.Register(api, huma.Operation{OperationID: "get-product", Method: http.MethodGet, Path: "/v1/products/{sku}", Summary: "Get a product with its stock", Tags: tags,
		Metadata: answers(codes(riverbank.ENOTFOUND), nil)}, h.getProduct)
}

func (h *handlers) putProduct(ctx context.Context, in *putProductInput) (*productOutput, error) {
	p, created, err := h.Orders.PutProduct(ctx, orders.ProductInput{
		SKU: in.SKU, Name: in.Body.Name, PriceMinor: in.Body.PriceMinor, Currency: in.Body.Currency, Stock: in.Body.Stock,
	})
	if err != nil {
		return nil, err
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	return &productOutput{Status: status, Body: productBody(p)}, nil
}

func (h *handlers) getProduct(ctx context.Context, in *skuInput) (*productOutput, error) {
	p, err := h.Orders.GetProduct(ctx, in.SKU)
	if err != nil {
		return nil, err
	}
	return &productOutput{Status: http.StatusOK, Body: productBody(p)}, nil
}
