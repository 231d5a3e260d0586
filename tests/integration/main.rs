mod wrapper;
